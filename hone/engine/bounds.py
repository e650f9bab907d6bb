"""When a run stops: steps, epochs, training time, a round's step target, or a request."""

from __future__ import annotations

from typing import Any

from hone.config import Config
from hone.errors import ConfigError

# Stops that are re-checked on resume and by the next `run()` (a bound may be raised); any
# other reason (early stopping, an observer's request) stands.
BOUND_REASONS = frozenset({"max_steps", "max_epochs", "max_seconds", "until"})

# Schedules whose shape depends on the run's planned total steps when decay_steps = 0.
_TOTAL_STEP_SCHEDULES = {"cosine", "linear", "wsd"}


def planned_steps(cfg: Config, steps_per_epoch: int) -> int:
    """Steps the run will take when bounded by steps or epochs (for schedules and ETA); 0 if
    only time bounds it, or epochs of a loader whose length is unknown (steps_per_epoch 0)."""
    t = cfg.train
    bounds = []
    if t.max_steps:
        bounds.append(t.max_steps)
    if t.max_epochs and steps_per_epoch:
        bounds.append(t.max_epochs * steps_per_epoch)
    return min(bounds) if bounds else 0


class Plan:
    """The planned total steps, checkpointed: a resumed run whose schedule decays over the
    total must keep it, or its learning rate would change."""

    def __init__(self, cfg: Config, total_steps: int) -> None:
        self.cfg, self.total_steps = cfg, total_steps

    def state_dict(self) -> dict[str, Any]:
        return {"total_steps": self.total_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        t, sched = self.cfg.train, self.cfg.schedule
        planned = state["total_steps"]
        if (
            planned != self.total_steps
            and sched.name in _TOTAL_STEP_SCHEDULES
            and not sched.decay_steps
        ):
            raise ConfigError(
                f"the run was planned for {planned} steps and its "
                f"schedule.name={sched.name!r} decays over them (schedule.decay_steps=0); "
                f"changing the bounds would change its lr, got {self.total_steps} steps now "
                f"(train.max_steps={t.max_steps}, train.max_epochs={t.max_epochs}); resume "
                "with the original bounds"
            )


def bound_reached(cfg: Config, step: int, epochs_done: float, until: int | None) -> str:
    """The step or epoch bound that `step` reached ('' if none)."""
    t = cfg.train
    if t.max_steps and step >= t.max_steps:
        return "max_steps"
    if t.max_epochs and epochs_done >= t.max_epochs:
        return "max_epochs"
    if until is not None and step >= until:
        return "until"
    return ""
