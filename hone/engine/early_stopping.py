"""Early stopping on a monitored validation metric, with patience and min_delta: an observer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hone.engine.observers import Observer
from hone.metrics import is_better, worst

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer

STOP_REASON = "early_stopping"


class EarlyStopping(Observer):
    """Counts evaluations without an improvement of more than `min_delta`; asks the trainer
    to stop after `patience` of them (0: never). The metric's direction is hone.metrics'."""

    state_key = "early_stopping"

    def __init__(self, monitor: str, patience: int, min_delta: float) -> None:
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.best = worst(monitor)
        self.best_step = -1
        self.bad_evals = 0

    def update(self, value: float, step: int) -> bool:
        """Record one evaluation; return True when training should stop."""
        if is_better(self.monitor, value, self.best, self.min_delta):
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        return self.patience > 0 and self.bad_evals >= self.patience

    def on_evaluation(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        if self.update(metrics[self.monitor], step):
            trainer.request_stop(STOP_REASON)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_step, self.bad_evals = int(state["best_step"]), int(state["bad_evals"])
