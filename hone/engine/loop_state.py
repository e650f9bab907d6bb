"""The loop's own checkpointed state: counters, best values, the loss window."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from hone.engine.bounds import BOUND_REASONS


@dataclass
class LoopState:
    """The loop's own counters; checkpointed with everything else."""

    step: int = 0
    train_seconds: float = 0.0  # time spent in training steps, evaluation excluded
    samples_seen: int = 0
    last_val: dict[str, float] = field(default_factory=dict)
    best_val: dict[str, float] = field(default_factory=dict)
    stop_reason: str = ""

    def state_dict(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        # Bounds are re-checked on resume (they may be raised); an early stop stands.
        state["stop_reason"] = "" if self.stop_reason in BOUND_REASONS else self.stop_reason
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclass
class LogWindow:
    """Train losses summed since the last log step; checkpointed, so a resumed run logs the
    same mean losses as one never stopped."""

    loss_sum: torch.Tensor  # on the device: adding to it costs no host sync
    count: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_sum.copy_(state["loss_sum"])
        self.count = int(state["count"])
