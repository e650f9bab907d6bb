"""Early stopping on a monitored validation metric, with patience and min_delta."""

from __future__ import annotations

import math
from typing import Any


def monitor_mode(monitor: str) -> str:
    """Losses are minimized; every other metric (accuracy, r2) is maximized."""
    return "min" if monitor.endswith("loss") else "max"


class EarlyStopping:
    """Counts evaluations without an improvement of more than `min_delta`."""

    def __init__(self, monitor: str, patience: int, min_delta: float) -> None:
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode = monitor_mode(monitor)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_step = -1
        self.bad_evals = 0

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float, step: int) -> bool:
        """Record one evaluation; return True when training should stop."""
        if self.improved(value):
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        return self.patience > 0 and self.bad_evals >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_step, self.bad_evals = int(state["best_step"]), int(state["bad_evals"])
