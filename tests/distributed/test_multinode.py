"""Two "machines" on one: two launchers meet at a c10d rendezvous and train one run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distributed.helpers import MLP, ROOT, worker_env
from tests.distributed.test_faults import free_port


@pytest.mark.slow  # two launchers and two workers: about 15 s
def test_two_nodes_rendezvous_at_node_zero(tmp_path: Path) -> None:
    run, endpoint = tmp_path / "run", f"127.0.0.1:{free_port()}"
    launchers = [
        subprocess.Popen(
            [sys.executable, "-m", "hone", "train", "mlp-digits", "--nproc", "1"]
            + ["--nnodes", "2", "--node-rank", str(node), "--rdzv-endpoint", endpoint]
            + ["--run-dir", str(run), *[f"--{o}" for o in MLP], "--train.max_steps=20"],
            cwd=ROOT,
            env=worker_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = [p.communicate(timeout=120) for p in launchers]
    assert [p.returncode for p in launchers] == [0, 0], [err[-2000:] for _, err in outputs]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 20
    # One of the two printed the summary: the rendezvous gave it global rank 0.
    assert sum("run directory:" in out for out, _ in outputs) == 1
