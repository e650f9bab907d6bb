"""`hone runs` tells finished, running, stopped, killed and failed runs apart: real `hone
train` subprocesses, real signals (SIGKILL leaves no summary and a "running" status behind),
a real uncaught exception, and the NaN guard giving up in this process."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hone.cli import main
from hone.config import load_config
from hone.engine import Observer, Trainer
from hone.errors import TrainingAborted
from hone.run_files import RunFiles
from hone.run_records.status import process_alive, process_start, this_process
from hone.runs import list_runs, read_run
from tests import forking
from tests.compress.conftest import QUIET, one_thread_in_tmp

ROOT = Path(__file__).resolve().parents[2]
LINREG = ["linreg", "--train.max_epochs=0", *(f"--{o}" for o in QUIET)]
# Long enough to be caught running: stopped by a signal long before the end.
ENDLESS = [*LINREG, "--train.max_steps=100000000", "--log.every=200"]
FAILING = [
    *LINREG,
    "--train.max_steps=50",
    "--model.name=custom",
    "--model.target=tests.runs.failing_model:factory",
]


def start(run_dir: Path, args: list[str]) -> forking.Forked:
    """`hone train ARGS` as a process of its own: a fork of a server that imported torch."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    logs = Path(tempfile.gettempdir()) / f"hone-test-logs-{os.getpid()}"
    return forking.Forked(["train", *args, "--run-dir", str(run_dir)], ROOT, env, logs)


def wait_for(condition, procs: list[forking.Forked], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            assert proc.poll() is None, f"exited early ({proc.returncode}): {proc.stderr_text()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _logged(run_dir: Path) -> bool:
    files = RunFiles(run_dir)
    return files.status.exists() and files.metrics.exists() and files.metrics.stat().st_size > 0


def states(root: Path) -> dict[str, str]:
    return {r.name: r.status.label for r in list_runs([root])}


def test_every_state_of_a_run(tmp_path, tmp_path_factory, capsys) -> None:
    # Subprocesses first: they train while this process does too.
    killed, stopped = start(tmp_path / "killed", ENDLESS), start(tmp_path / "stopped", ENDLESS)
    crashed = start(tmp_path / "crashed", FAILING)
    try:
        with one_thread_in_tmp(tmp_path_factory):
            Trainer(
                config=load_config("linreg", ["train.max_steps=20", *QUIET]),
                run_dir=tmp_path / "done",
            ).fit()
            nan = ["model.name=custom", "model.target=tests.runs.failing_model:factory"]
            nan += ["model.kwargs={after = 3, mode = 'nan'}", "train.max_steps=50", *QUIET]
            trainer = Trainer(config=load_config("linreg", nan), run_dir=tmp_path / "diverged")
            with pytest.raises(TrainingAborted):
                trainer.fit()
            assert read_run(tmp_path / "diverged").status.state == "running"  # trainer alive
            del trainer
            gc.collect()  # the trainer went away unfinished: its status says so
        alive = [killed, stopped]
        # Running, with a train event logged (the killed run's steps come from it).
        wait_for(lambda: all(_logged(tmp_path / n) for n in ("killed", "stopped")), alive)
        assert states(tmp_path)["killed"] == states(tmp_path)["stopped"] == "running"
        killed.send_signal(signal.SIGKILL)
        stopped.send_signal(signal.SIGTERM)
        assert killed.wait(60) == -signal.SIGKILL and stopped.wait(60) == 0
        assert crashed.wait(180) == 1
    finally:
        for proc in (killed, stopped, crashed):
            proc.kill()
            proc.wait()
    found = {r.name: r for r in list_runs([tmp_path])}
    assert {name: r.status.label for name, r in found.items()} == {
        "done": "finished",
        "killed": "killed",
        "stopped": "stopped (SIGTERM)",
        "crashed": "failed (exit 1)",
        "diverged": "failed",  # the CLI would exit 3; this process knew no exit code
    }
    assert "is gone" in found["killed"].status.detail and not found["killed"].summary
    assert "failing on purpose" in found["crashed"].status.detail
    assert "non-finite" in found["diverged"].status.detail
    assert found["killed"].steps and found["killed"].steps > 0  # from the metrics' tail
    assert found["done"].steps == 20 and found["done"].recipe == "linreg"

    assert main(["runs", str(tmp_path), "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["crashed"]["state"] == "failed" and rows["crashed"]["exit_code"] == 1
    assert rows["stopped"]["exit_code"] == 0 and rows["killed"]["exit_code"] is None
    assert main(["runs", str(tmp_path), "--where", "status=failed", "--sort", "name"]) == 0
    table = capsys.readouterr().out
    assert "crashed" in table and "diverged" in table and "killed" not in table


def test_a_process_is_known_by_pid_and_start_time() -> None:
    me = this_process()
    assert process_alive(me["pid"], me["process_start"])
    if me["process_start"] is not None:  # Linux: a reused pid has another start time
        assert not process_alive(me["pid"], str(int(me["process_start"]) + 1))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process_start(child.pid)
    child.wait()
    assert not process_alive(child.pid, started)


class Prune(Observer):
    """Ends the run at its first evaluation by raising, as the tuner's pruning does."""

    def on_evaluation(self, trainer, step, metrics) -> None:
        raise KeyError("pruned")


def test_a_trial_the_tuner_pruned_stays_pruned_after_its_trainer_is_gone(tmp_path) -> None:
    cfg = load_config("linreg", ["train.max_steps=20", "train.eval_every=5", *QUIET])
    trainer = Trainer(config=cfg, run_dir=tmp_path / "trial", observers=[Prune()])
    with pytest.raises(KeyError):
        trainer.fit()
    summary = trainer.summary()  # what hone.tune's objective writes for a pruned trial
    trainer.log.write_json(trainer.files.summary.name, {**summary, "stop_reason": "pruned"})
    del trainer
    gc.collect()
    assert read_run(tmp_path / "trial").status.label == "pruned"
