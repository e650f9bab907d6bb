"""Observers see every hook in order, can stop a run, and checkpoint their state."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from hone.config import load_config
from hone.engine import Observer, Trainer
from hone.engine.observers import HOOKS, Observers
from hone.errors import ConfigError

MLP = [
    "data.name=synthetic_linear",
    "data.num_samples=200",
    "loss.name=mse",
    "model.name=mlp",
    "model.depth=1",
    "model.width=8",
    "train.batch_size=20",
    "train.eval_every=5",
    "log.every=5",
    "log.tensorboard=false",
]


def config(*overrides: str):
    return load_config(None, [*MLP, *overrides])


class Recorder(Observer):
    """Records every hook call, and what the trainer exposes at that moment."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.grads_present: list[bool] = []
        self.events: list[dict[str, Any]] = []
        self.evaluations: list[tuple[int, dict[str, float]]] = []
        self.summary: dict[str, Any] | None = None

    def on_fit_start(self, trainer) -> None:
        self.calls.append("fit_start")

    def on_step_start(self, trainer, batches) -> None:
        assert len(batches) == trainer.cfg.train.grad_accum
        self.calls.append("step_start")

    def on_after_backward(self, trainer) -> None:
        grads = [p.grad for p in trainer.model.parameters()]
        self.grads_present.append(all(g is not None and torch.isfinite(g).all() for g in grads))
        self.calls.append("after_backward")

    def on_log(self, trainer, event) -> None:
        self.events.append(event)

    def on_evaluation(self, trainer, step, metrics) -> None:
        self.evaluations.append((step, metrics))

    def on_step_end(self, trainer, loss) -> None:
        self.calls.append("step_end")

    def on_non_finite(self, trainer, batches) -> None:
        self.calls.append("non_finite")

    def on_fit_end(self, trainer, summary) -> None:
        self.calls.append("fit_end")
        self.summary = summary


def test_every_hook_is_called_in_order(tmp_path) -> None:
    recorder = Recorder()
    summary = Trainer(
        config=config("train.max_steps=12"), run_dir=tmp_path / "run", observers=[recorder]
    ).fit()
    assert recorder.calls[0] == "fit_start" and recorder.calls[-1] == "fit_end"
    assert recorder.calls[1:-1] == ["step_start", "after_backward", "step_end"] * 12
    assert recorder.grads_present == [True] * 12
    assert [step for step, _ in recorder.evaluations] == [5, 10, 12]
    assert set(recorder.evaluations[0][1]) == {"val_loss", "val_r2"}
    splits = [e["split"] for e in recorder.events]
    assert splits.count("train") == 3 and splits.count("val") == 3 and splits[-1] == "test"
    assert recorder.summary is not None and recorder.summary["steps"] == summary["steps"] == 12


def test_a_hook_nobody_implements_is_never_called() -> None:
    observers = Observers([Observer(), Recorder()])
    assert all(len(observers.by_hook[hook]) == 1 for hook in HOOKS)
    assert Observers([Observer()]).step_start == []


class StopAt(Observer):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, loss) -> None:
        if trainer.state.step == self.step:
            trainer.request_stop("enough")


def test_an_observer_stops_the_run_which_still_evaluates_and_saves(tmp_path) -> None:
    summary = Trainer(
        config=config("train.max_steps=50"), run_dir=tmp_path / "run", observers=[StopAt(7)]
    ).fit()
    assert summary["steps"] == 7 and summary["stop_reason"] == "enough"
    assert (tmp_path / "run/model.safetensors").is_file()
    assert summary["final_val_loss"] is not None  # evaluated at the stop


class Counter(Observer):
    """A stateful observer: its count survives a resume."""

    state_key = "counter"

    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, trainer, loss) -> None:
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]


def test_a_stateful_observer_is_checkpointed(tmp_path) -> None:
    Trainer(config=config("train.max_steps=10", "train.checkpoint_every=5"), run_dir=tmp_path / "run",
            observers=[Counter()]).fit()  # fmt: skip
    counter = Counter()
    trainer = Trainer(config=config("train.max_steps=16"), run_dir=tmp_path / "run", observers=[counter],
                      resume=True)  # fmt: skip
    assert counter.steps == 10
    trainer.fit()
    assert counter.steps == 16


def test_resuming_without_the_state_an_observer_needs_is_refused(tmp_path) -> None:
    Trainer(
        config=config("train.max_steps=10", "train.checkpoint_every=5"), run_dir=tmp_path / "run"
    ).fit()
    with pytest.raises(ConfigError, match="holds no 'counter' state"):
        Trainer(config=config("train.max_steps=16"), run_dir=tmp_path / "run", observers=[Counter()],
                resume=True)  # fmt: skip
