"""A dead or stuck rank ends the run within bounded time; with restarts the run recovers."""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import time
from pathlib import Path

import torch

from hone.config import load_config
from hone.engine import Trainer
from hone.track.run import read_metrics
from tests import forking
from tests.distributed.helpers import MLP, ROOT, gpt_config, max_weight_difference, worker_env

# An MLP run far longer than any test waits: the tests stop it themselves.
ENDLESS = [f"--{o}" for o in MLP if not o.startswith("train.max_steps")] + [
    "--train.max_steps=1000000",
    "--log.every=5",
]


def last_step(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}")]
    return max(steps, default=0)


def wait_for_step(run_dir: Path, step: int, *processes: forking.Forked, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while last_step(run_dir) < step:
        for p in processes:
            assert p.poll() is None, p.stderr_text()[-3000:]
        assert time.monotonic() < deadline, f"no step {step} after {timeout} s"
        time.sleep(0.1)


def children(pid: int) -> dict[int, int]:
    """{local rank: pid} of the worker processes the launcher `pid` started (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if ppid == pid:
            for var in env:
                if var.startswith(b"LOCAL_RANK="):
                    found[int(var.split(b"=")[1])] = int(entry.name)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hone(*args: str, env: dict[str, str] | None = None) -> forking.Forked:
    """`hone train ARGS` as a fork of a server that imported torch already (tests/forking.py);
    the workers a launcher starts are fresh interpreters, as for a user."""
    logs = Path(tempfile.gettempdir()) / f"hone-test-logs-{os.getpid()}"
    return forking.Forked(["train", *args], ROOT, env or worker_env(), logs)


def test_dead_rank_ends_the_group_without_restarts(tmp_path: Path) -> None:
    run = tmp_path / "run"
    launcher = hone("mlp-digits", "--nproc", "2", "--run-dir", str(run), *ENDLESS)
    try:
        wait_for_step(run, 10, launcher)
        workers = children(launcher.pid)
        assert sorted(workers) == [0, 1]
        os.kill(workers[1], signal.SIGKILL)
        killed = time.monotonic()
        returncode = launcher.wait(timeout=60)
        seconds = time.monotonic() - killed
    finally:
        launcher.kill()
    assert returncode != 0
    assert seconds < 20, seconds  # dist.timeout_seconds would be the bound; it is far quicker
    assert not alive(workers[0])
    assert "worker rank 1 failed (signal 9)" in launcher.stderr_text()


def test_stuck_rank_times_out_without_an_agent(tmp_path: Path) -> None:
    """Two processes started the way `srun` starts them: no torchrun agent watches them, so
    only the collective timeout stands between a stuck peer and a hang."""
    run, port, timeout = tmp_path / "run", str(free_port()), 5
    base = worker_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2")
    ranks = [
        hone(
            "mlp-digits",
            "--run-dir",
            str(run),
            f"--dist.timeout_seconds={timeout}",
            *ENDLESS,
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": "2"},
        )
        for r in range(2)
    ]
    try:
        wait_for_step(run, 10, *ranks)
        os.kill(ranks[1].pid, signal.SIGSTOP)
        stopped = time.monotonic()
        returncode = ranks[0].wait(timeout=60)
        seconds = time.monotonic() - stopped
    finally:
        for p in ranks:
            p.kill()
    assert returncode != 0
    assert timeout - 1 < seconds < timeout + 15, seconds
    assert "Timed out" in ranks[0].stderr_text()


def test_killed_rank_restarts_from_the_last_checkpoint(tmp_path: Path) -> None:
    """SIGKILL of rank 1 with --max-restarts 1: torchrun restarts both workers, they resume
    from the newest checkpoint by themselves, and the run ends as if nothing had happened."""
    config, base = gpt_config(tmp_path)
    overrides = [o for o in base if not o.startswith(("train.max_steps", "log.every"))]
    overrides += ["train.max_steps=200", "train.checkpoint_every=50", "train.eval_every=50"]
    run = tmp_path / "run"
    launcher = hone(
        config, "--nproc", "2", "--max-restarts", "1", "--run-dir", str(run),
        *[f"--{o}" for o in overrides], "--log.every=10",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not (run / "checkpoints" / "step-0000050").is_dir():
            assert launcher.poll() is None, launcher.stderr_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 90 s"
            time.sleep(0.02)
        killed_at = last_step(run)
        os.kill(children(launcher.pid)[1], signal.SIGKILL)
        returncode = launcher.wait(timeout=120)
    finally:
        launcher.kill()
    stderr = launcher.stderr_text()
    assert returncode == 0, stderr[-3000:]
    assert killed_at < 200  # the kill landed mid-run
    events = read_metrics(run)
    train_steps = [e["step"] for e in events if e["split"] == "train"]
    # Each step logged once: the resumed group cut metrics.jsonl back to its checkpoint.
    assert train_steps == list(range(10, 201, 10))
    assert json.loads((run / "summary.json").read_text())["steps"] == 200
    # The same weights as one process training the same 200 steps without interruption.
    single = tmp_path / "single"
    torch.set_num_threads(1)
    Trainer(config=load_config(config, [*overrides, "log.every=10"]), run_dir=single).fit()
    assert max_weight_difference(run, single) < 1e-5
