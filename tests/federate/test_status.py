"""A federated run is a run like any other around its rounds (hone.engine.shell): `hone runs`
lists it as running, finished, killed (a real `hone federate` subprocess, a real SIGKILL) or
failed; observers see the same hooks as a trainer's, and the defaults can be replaced."""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from hone.cli import main
from hone.config import load_config
from hone.engine import Observer
from hone.engine.run_status import RunStatus
from hone.federate import federate
from hone.federate.server import FederatedRun
from hone.run_files import RunFiles
from hone.runs import read_run
from hone.track.run import read_metrics
from tests import forking
from tests.federate.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]
SMALL = [*TINY, "federated.clients=2", "federated.local_steps=2"]


def runs_json(root: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    assert main(["runs", str(root), "--json"]) == 0
    return {row["name"]: row for row in json.loads(capsys.readouterr().out)}


def val_rounds(run_dir: Path) -> int:
    metrics = RunFiles(run_dir).metrics
    if not metrics.is_file():
        return 0
    return sum('"split": "val"' in line for line in metrics.read_text().splitlines())


def test_hone_runs_tells_a_running_a_finished_and_a_killed_federated_run_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Far more rounds than it lives through: it is caught running, then killed.
    endless = [f"--{o}" for o in [*SMALL, "federated.rounds=100000"]]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = ["federate", "mlp-digits", *endless, "--run-dir", str(tmp_path / "killed")]
    proc = forking.Forked(command, ROOT, env, tmp_path / "logs")  # a process of its own
    try:
        # Meanwhile (part of its time is importing Flower), one that finishes.
        summary = federate(
            load_config("mlp-digits", [*SMALL, "federated.rounds=2"]), tmp_path / "done"
        )
        deadline = time.monotonic() + 120
        while val_rounds(tmp_path / "killed") < 2:  # two rounds: heartbeats after the first
            assert proc.poll() is None, proc.stderr_text()
            assert time.monotonic() < deadline, "no round completed in time"
            time.sleep(0.05)
        rows = runs_json(tmp_path, capsys)
        assert rows["killed"]["state"] == "running"
        assert rows["killed"]["steps"] >= 2 and rows["killed"]["total_steps"] == 100000
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(60) == -signal.SIGKILL
    finally:
        proc.kill()
    rows = runs_json(tmp_path, capsys)
    assert rows["done"]["state"] == "finished" and rows["done"]["exit_code"] == 0
    assert rows["done"]["steps"] == summary["steps"] == summary["rounds"] == 2
    assert rows["done"]["best"] == pytest.approx(summary["best_val_metric"])
    assert rows["killed"]["state"] == "killed" and rows["killed"]["steps"] >= 2
    assert "is gone" in read_run(tmp_path / "killed").status.detail


class Recorder(Observer):
    """The hooks a federated run calls, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_fit_start(self, trainer) -> None:
        assert isinstance(trainer, FederatedRun)
        self.calls.append("fit_start")

    def on_log(self, trainer, event) -> None:
        self.calls.append(f"log {event['split']} {event['step']}")

    def on_evaluation(self, trainer, step, metrics) -> None:
        assert trainer.state.best_val["val_loss"] <= metrics["val_loss"]
        self.calls.append(f"evaluation {step}")

    def on_step_end(self, trainer, loss) -> None:
        self.calls.append(f"step_end {trainer.round}")

    def on_fit_end(self, trainer, summary) -> None:
        assert RunFiles(trainer.files.root).summary.is_file()  # written before
        self.calls.append("fit_end")


def test_observers_see_the_hooks_of_a_trainer_and_the_defaults_can_be_replaced(
    tmp_path: Path,
) -> None:
    cfg = load_config("mlp-digits", [*SMALL, "federated.rounds=2"])
    recorder = Recorder()
    summary = FederatedRun(cfg, tmp_path / "run", observers=[recorder]).run(_grid(cfg))
    round_calls = ["log train {r}", "log val {r}", "evaluation {r}", "step_end {r}"]
    expected = [c.format(r=r) for r in (1, 2) for c in round_calls]
    assert recorder.calls == ["fit_start", *expected, "log test 2", "fit_end"]
    status = json.loads(RunFiles(tmp_path / "run").status.read_text())
    assert status["state"] == "finished" and status["step"] == 2
    assert status["best_val"]["val_loss"] == summary["best_val_loss"]
    assert [e["split"] for e in read_metrics(tmp_path / "run")].count("val") == 2

    # A function of the default list: here, every default but the status file.
    def without_status(defaults: list[Observer]) -> list[Observer]:
        return [o for o in defaults if not isinstance(o, RunStatus)]

    FederatedRun(cfg, tmp_path / "quiet", observers=without_status).run(_grid(cfg))
    assert not RunFiles(tmp_path / "quiet").status.exists()
    assert RunFiles(tmp_path / "quiet").summary.is_file()


def _grid(cfg: Any) -> Any:
    from hone.federate.client import client_app
    from hone.federate.grid import InProcessGrid, OrderedGrid

    return OrderedGrid(InProcessGrid(client_app, cfg.federated.clients))


def test_a_federated_run_that_raises_lists_as_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_round = FederatedRun.train_round

    def fails_in_round_2(self: FederatedRun, grid: object, server_round: int) -> None:
        if server_round == 2:
            raise RuntimeError("a broken round")
        train_round(self, grid, server_round)  # type: ignore[arg-type]

    monkeypatch.setattr(FederatedRun, "train_round", fails_in_round_2)
    with pytest.raises(RuntimeError, match="a broken round"):
        federate(load_config("mlp-digits", [*SMALL, "federated.rounds=3"]), tmp_path / "run")
    gc.collect()  # the run went away unfinished: its status says so
    record = read_run(tmp_path / "run")
    assert record.status.state == "failed" and record.steps == 1
