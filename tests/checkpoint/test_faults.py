"""Numerical faults: a non-finite step is skipped untouched; a streak rolls back; then exit 3."""

from __future__ import annotations

import math

import pytest
import torch

from hone.checkpoint import FaultInjector, flatten
from hone.cli import main
from hone.engine import Trainer
from hone.errors import ConfigError, TrainingAborted
from hone.track.run import read_metrics
from tests.checkpoint.helpers import LINREG, MLP, checkpoint_steps, config, train_steps


def faults(run_dir) -> list[dict]:
    return [e for e in read_metrics(run_dir) if e["split"] == "fault"]


def snapshot(trainer: Trainer) -> tuple[dict, dict, dict]:
    params = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    _, optimizer = flatten(trainer.optimizer.state_dict())
    return params, {k: v.clone() for k, v in optimizer.items()}, trainer.schedule.state_dict()


def assert_same(a: tuple[dict, dict, dict], b: tuple[dict, dict, dict]) -> None:
    for x, y in zip(a[:2], b[:2], strict=True):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert a[2] == b[2]


def test_injection_syntax() -> None:
    injector = FaultInjector.parse("nan_loss@2,4;nan_grad@6-")
    assert [sorted(injector.next_attempt()) for _ in range(8)] == [
        [], ["nan_loss"], [], ["nan_loss"], [], ["nan_grad"], ["nan_grad"], ["nan_grad"]
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="HONE_FAULT_INJECT"):
        FaultInjector.parse("nan@3")


@pytest.mark.parametrize(
    ("kind", "overrides"),
    [
        ("nan_loss", [*MLP, "optim.name=adamw", "schedule.name=cosine"]),
        ("nan_grad", [*MLP, "optim.name=muon", "train.clip_norm=1.0"]),
        ("nan_loss", [*LINREG, "optim.name=lbfgs", "optim.lr=1", "optim.max_iter=4"]),
        ("nan_grad", [*LINREG, "optim.name=newton", "optim.lr=1"]),
    ],
)
def test_a_non_finite_step_changes_nothing(tmp_path, monkeypatch, kind, overrides) -> None:
    monkeypatch.setenv("HONE_FAULT_INJECT", f"{kind}@3")
    trainer = Trainer(config=config(*overrides, "train.max_steps=10"), run_dir=tmp_path / "run")
    for _ in range(2):
        trainer.stepper.step(trainer.batcher.next_step())
        assert trainer.stepper.ok
    before = snapshot(trainer)
    trainer.stepper.step(trainer.batcher.next_step())  # attempt 3: poisoned
    assert not trainer.stepper.ok
    assert_same(before, snapshot(trainer))  # params, optimizer state and lr schedule
    loss = trainer.stepper.step(trainer.batcher.next_step())  # attempt 4 steps again
    assert trainer.stepper.ok and math.isfinite(float(loss))


def test_skipped_steps_keep_the_schedule_and_the_run_finishes(tmp_path, monkeypatch) -> None:
    overrides = [*MLP, "optim.name=adamw", "schedule.name=cosine", "train.max_steps=20"]
    Trainer(config=config(*overrides), run_dir=tmp_path / "ref").fit()
    monkeypatch.setenv("HONE_FAULT_INJECT", "nan_loss@5,6")
    summary = Trainer(config=config(*overrides), run_dir=tmp_path / "run").fit()
    assert summary["steps"] == 20 and math.isfinite(summary["final_val_loss"])
    events = faults(tmp_path / "run")
    assert [(e["step"], e["event"], e["reason"], e["consecutive"]) for e in events] == [
        (5, "skipped_step", "non-finite loss", 1),
        (5, "skipped_step", "non-finite loss", 2),
    ]
    assert train_steps(tmp_path / "run") == list(range(1, 21))
    # The lr depends on the optimizer step alone: the skipped attempts did not advance it.
    lrs = [e["lr"] for e in read_metrics(tmp_path / "run") if e["split"] == "train"]
    assert lrs == [e["lr"] for e in read_metrics(tmp_path / "ref") if e["split"] == "train"]


def test_a_streak_rolls_back_and_goes_on(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HONE_FAULT_INJECT", "nan_loss@8,9,10")
    overrides = [
        *MLP,
        "optim.name=sgd",
        "train.max_steps=20",
        "train.checkpoint_every=5",
        "train.max_bad_steps=3",
        "train.rollback_skip=2",
    ]
    trainer = Trainer(config=config(*overrides), run_dir=tmp_path / "run")
    summary = trainer.fit()
    assert summary["steps"] == 20 and math.isfinite(summary["final_val_loss"])
    events = faults(tmp_path / "run")
    assert [(e["step"], e["event"]) for e in events] == [(8, "skipped_step")] * 3 + [
        (5, "rollback")
    ]
    assert events[-1] == {
        "step": 5,
        "split": "fault",
        "event": "rollback",
        "stuck_at_step": 8,
        "rollback": 1,
        "skipped_batches": 2,
    }
    # steps 6 and 7 were redone after the rollback; each is in the log once
    assert train_steps(tmp_path / "run") == list(range(1, 21))
    # back at checkpoint 5's batch position, 2 batches skipped, then steps 6 to 20
    assert trainer.batcher.epoch * trainer.batcher.steps_per_epoch + trainer.batcher.position == 22


def test_repeated_faults_abort_with_exit_code_3(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HONE_FAULT_INJECT", "nan_loss@8-")
    overrides = [
        *LINREG,
        "optim.name=sgd",
        "train.max_steps=30",
        "train.checkpoint_every=5",
        "train.max_bad_steps=2",
        "train.max_rollbacks=2",
    ]
    with pytest.raises(TrainingAborted, match="after 2 rollbacks"):
        Trainer(config=config(*overrides), run_dir=tmp_path / "run").fit()
    rollbacks = [e for e in faults(tmp_path / "run") if e["event"] == "rollback"]
    assert [e["rollback"] for e in rollbacks] == [1, 2]
    assert checkpoint_steps(tmp_path / "run") == [5]
    # the same through the CLI: one line on stderr and exit code 3
    code = main(["train", "--run-dir", str(tmp_path / "cli"), *(f"--{o}" for o in overrides)])
    assert code == 3
    assert "consecutive non-finite steps" in capsys.readouterr().err


def test_no_checkpoint_to_roll_back_to_aborts(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HONE_FAULT_INJECT", "nan_grad@2-")
    overrides = [*LINREG, "train.max_steps=30", "train.max_bad_steps=2"]
    with pytest.raises(TrainingAborted, match="checkpoint_every"):
        Trainer(config=config(*overrides), run_dir=tmp_path / "run").fit()


@pytest.mark.parametrize("guard", [True, False])
def test_nan_guard_switch(tmp_path, guard: bool) -> None:
    # An lr of 1e38 overflows the weights to inf within a few steps: the guard skips those steps
    # and keeps every weight finite; without it (train.nan_guard=false) they are taken.
    overrides = [*MLP, "optim.name=sgd", "optim.lr=1e38", f"train.nan_guard={str(guard).lower()}"]
    trainer = Trainer(
        config=config(*overrides, "train.max_steps=10", "train.max_bad_steps=100"),
        run_dir=tmp_path / "run",
    )
    for _ in range(6):
        trainer.stepper.step(trainer.batcher.next_step())
    finite = all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())
    assert finite is guard
