"""`hone tune` as processes: parallel workers on one SQLite file, and a worker killed mid-trial."""

from __future__ import annotations

import itertools
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tests import forking
from tests.conftest import ROOT
from tests.tune.conftest import linreg_config

SAFE_LR = {"optim.lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True}}


def hone_tune(*args: str) -> forking.Forked:
    """`hone tune ARGS` as a fork of a server that imported torch already (tests/forking.py);
    the workers it starts are fresh interpreters, as for a user."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    logs = Path(tempfile.gettempdir()) / f"hone-test-logs-{os.getpid()}"
    return forking.Forked(["tune", *args], ROOT, env, logs)


def trials_of(directory: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{directory / 'study.db'}")
    return study.get_trials()


def random_search(tmp_path: Path, max_steps: int, eval_every: int, **options: Any) -> Path:
    """The config of a linear-regression study sampled at random and never pruned."""
    train = {"max_steps": max_steps, "max_epochs": 0, "eval_every": eval_every}
    return linreg_config(
        tmp_path / "c.toml", SAFE_LR, train=train, sampler="random", pruner="none", **options
    )


def test_two_workers_run_trials_at_the_same_time(tmp_path: Path) -> None:
    config = random_search(tmp_path, 1200, 400)
    tuning = hone_tune(str(config), "--trials", "4", "--workers", "2", "--dir", str(tmp_path / "t"))
    assert tuning.wait(timeout=300) == 0, tuning.stderr_text()
    trials = trials_of(tmp_path / "t", "linreg")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    overlapping = [
        (a.number, b.number)
        for a, b in itertools.combinations(trials, 2)
        if a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
    ]
    assert overlapping, "the two workers never trained at the same time"
    logs = "".join(p.read_text() for p in (tmp_path / "t" / "workers").glob("*.log"))
    assert "locked" not in logs + tuning.stderr_text() and "Traceback" not in logs
    assert "best trial" in tuning.stdout_text()


def test_a_killed_worker_is_retried_and_the_study_completes(tmp_path: Path) -> None:
    config = random_search(tmp_path, 3000, 100, heartbeat_seconds=1, grace_seconds=2)
    command = (str(config), "--trials", "2", "--dir", str(tmp_path / "t"))
    first = hone_tune(*command)
    metrics = tmp_path / "t" / "trials" / "trial-0" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    # Kill it in the middle of trial 0: after its first evaluation, long before step 3000.
    while '"split": "val"' not in (metrics.read_text() if metrics.exists() else ""):
        assert first.poll() is None, first.stderr_text()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert trials_of(tmp_path / "t", "linreg")[0].state == TrialState.RUNNING
    time.sleep(2.5)  # past the grace period: trial 0 is now stale

    again = hone_tune(*command)
    assert again.wait(timeout=300) == 0, again.stderr_text()
    trials = trials_of(tmp_path / "t", "linreg")
    states = [t.state for t in trials]
    assert states[0] == TrialState.FAIL and states.count(TrialState.COMPLETE) == 2
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.state == TrialState.COMPLETE and retry.params == trials[0].params


def test_no_more_workers_start_than_trials_are_left(tmp_path: Path) -> None:
    """--workers 3 for one trial runs it in the command's own process: no worker starts."""
    config = random_search(tmp_path, 50, 50)
    tuning = hone_tune(str(config), "--trials", "1", "--workers", "3", "--dir", str(tmp_path / "t"))
    assert tuning.wait(timeout=300) == 0, tuning.stderr_text()
    assert [t.state for t in trials_of(tmp_path / "t", "linreg")] == [TrialState.COMPLETE]
    assert not (tmp_path / "t" / "workers").exists()
