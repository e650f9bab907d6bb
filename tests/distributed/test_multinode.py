"""Two "machines" on one: two launchers meet at a c10d rendezvous and train one run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.distributed.helpers import MLP
from tests.distributed.test_faults import free_port, hone


@pytest.mark.slow  # two launchers and two workers: about 15 s
def test_two_nodes_rendezvous_at_node_zero(tmp_path: Path) -> None:
    run, endpoint = tmp_path / "run", f"127.0.0.1:{free_port()}"
    flags = ["--nproc", "1", "--nnodes", "2", "--rdzv-endpoint", endpoint, "--run-dir", str(run)]
    flags += [*(f"--{o}" for o in MLP), "--train.max_steps=20"]
    launchers = [hone("mlp-digits", "--node-rank", str(node), *flags) for node in (0, 1)]
    codes: list[int | None] = []
    for launcher in launchers:
        try:
            codes.append(launcher.wait(timeout=120))
        except subprocess.TimeoutExpired:  # say why below, with what they wrote
            codes.append(None)
    for launcher in launchers:
        launcher.kill()  # none left behind (a no-op for one that ended)
    outputs = [(p.stdout_text(), p.stderr_text()) for p in launchers]
    assert codes == [0, 0], [err[-2000:] for _, err in outputs]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 20
    # One of the two printed the summary: the rendezvous gave it global rank 0.
    assert sum("run directory:" in out for out, _ in outputs) == 1
