"""Learning-rate schedules: a closed-form factor of the base lr at each optimizer step.

Every schedule is one `LambdaLR` whose factor is the pure function `lr_factor(cfg, step, ...)`
rather than a chain of torch schedulers (LinearLR then CosineAnnealingLR, ...). A closed form is
exact on resume (the factor depends only on the step count, which the scheduler's state_dict
carries, not on a product of past per-step updates) and the same for every param group (Muon's
and AdamW's groups with their different base lrs see the same factor).

Conventions, shared by all schedules:
  - `step` is the 0-based index of the optimizer step about to be taken.
  - Warmup: factor = (step + 1) / warmup_steps for step < warmup_steps, so the first step takes
    lr / warmup_steps (never 0, which would waste a step) and step warmup_steps - 1 the full lr.
  - The decay shapes start counting when warmup ends: t = step - warmup_steps.
  - cosine, linear and wsd reach min_lr at step `decay_end` = schedule.decay_steps (or the run's
    total steps when 0) and stay there.
  - `schedule.min_lr` is an absolute lr, so the factor never falls below min_lr / base_lr, where
    base_lr is optim.lr; it floors every schedule, not only those that decay to it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from hone.config import ScheduleConfig
from hone.errors import ConfigError
from hone.registry import Registry

# A decay shape: (cfg, t = steps since warmup ended, decay_span = decay_end - warmup_steps,
# floor) -> factor before flooring. decay_span is only meaningful for cosine, linear and wsd.
DecayShape = Callable[[ScheduleConfig, int, int, float], float]

SCHEDULES: Registry[DecayShape] = Registry("schedule", "schedule.name")

# The schedules that decay to min_lr by a fixed step, and so need to know where that step is.
_ENDS_AT_DECAY_STEPS = {"cosine", "linear", "wsd"}


@SCHEDULES.register("constant")
def _constant(cfg: ScheduleConfig, t: int, decay_span: int, floor: float) -> float:
    return 1.0


@SCHEDULES.register("inverse_time")
def _inverse_time(cfg: ScheduleConfig, t: int, decay_span: int, floor: float) -> float:
    return 1.0 / (1.0 + cfg.decay * t)


@SCHEDULES.register("step")
def _step(cfg: ScheduleConfig, t: int, decay_span: int, floor: float) -> float:
    return cfg.gamma ** (t // cfg.step_size)


@SCHEDULES.register("exponential")
def _exponential(cfg: ScheduleConfig, t: int, decay_span: int, floor: float) -> float:
    return cfg.gamma**t


@SCHEDULES.register("cosine")
def _cosine(cfg: ScheduleConfig, t: int, decay_span: int, floor: float) -> float:
    progress = min(t / decay_span, 1.0) if decay_span > 0 else 1.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@SCHEDULES.register("linear")
def _linear(cfg: ScheduleConfig, t: int, decay_span: int, floor: float) -> float:
    progress = min(t / decay_span, 1.0) if decay_span > 0 else 1.0
    return 1.0 - (1.0 - floor) * progress


@SCHEDULES.register("wsd")
def _wsd(cfg: ScheduleConfig, t: int, decay_span: int, floor: float) -> float:
    # Warmup-stable-decay: hold the lr, then decay linearly over the last decay_fraction of
    # the decay_steps (counted from step 0), but never start decaying before warmup ends.
    decay_end = decay_span + cfg.warmup_steps
    decay_start = max(decay_end * (1.0 - cfg.decay_fraction), cfg.warmup_steps)
    step = t + cfg.warmup_steps
    if step <= decay_start:
        return 1.0
    if step >= decay_end:
        return floor
    return 1.0 - (1.0 - floor) * (step - decay_start) / (decay_end - decay_start)


def decay_end_step(cfg: ScheduleConfig, total_steps: int) -> int:
    """The step at which cosine/linear/wsd reach min_lr: decay_steps, or total_steps if 0."""
    return cfg.decay_steps or total_steps


def lr_factor(cfg: ScheduleConfig, step: int, total_steps: int, *, base_lr: float = 1.0) -> float:
    """Multiplier of each param group's base lr at optimizer step `step` (0-based); pure.

    `base_lr` is optim.lr, needed because schedule.min_lr is absolute: the factor never falls
    below min_lr / base_lr. With the default 1.0, min_lr is read as a factor itself.
    """
    shape = SCHEDULES.get(cfg.name)
    floor = cfg.min_lr / base_lr
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    decay_span = decay_end_step(cfg, total_steps) - cfg.warmup_steps
    return max(shape(cfg, step - cfg.warmup_steps, decay_span, floor), floor)


def check_schedule(cfg: ScheduleConfig, total_steps: int, base_lr: float) -> None:
    """Raise a `ConfigError` for a schedule that cannot run as configured."""
    SCHEDULES.get(cfg.name)
    if cfg.min_lr > base_lr:
        raise ConfigError(
            f"schedule.min_lr must be at most optim.lr={base_lr}, got {cfg.min_lr}; "
            f"set --schedule.min_lr={base_lr / 10:g} for example"
        )
    if cfg.name not in _ENDS_AT_DECAY_STEPS:
        return
    decay_end = decay_end_step(cfg, total_steps)
    if decay_end == 0:
        raise ConfigError(
            f"schedule.name={cfg.name!r} must know where its decay ends, got "
            "schedule.decay_steps=0 and a run of unknown length; set --schedule.decay_steps=N "
            "or --train.max_steps=N"
        )
    # A run shorter than its warmup (a smoke test of a long recipe) simply warms up and then
    # sits at min_lr: no error, so that any recipe can be tried with --train.max_steps=N.


def build_schedule(
    cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A LambdaLR applying `lr_factor` to every param group; call its step() after each
    optimizer step.

    `total_steps` is the run's number of optimizer steps (0 when unknown); the base lr for
    schedule.min_lr is `optimizer.defaults['lr']` (optim.lr for every hone optimizer).
    """
    base_lr = float(optimizer.defaults["lr"])
    check_schedule(cfg, total_steps, base_lr)
    # A partial of a module-level function: LambdaLR's state_dict stores only its (empty)
    # __dict__, so the scheduler's state stays plain numbers.
    factor = functools.partial(lr_factor, cfg, total_steps=total_steps, base_lr=base_lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
