"""Every schedule in `SCHEDULES`, built by `build_schedule` over a run: a finite lr between
schedule.min_lr and optim.lr at every step, a warmup that starts low and climbs, and a
`state_dict` that, reloaded mid-run (through safetensors + JSON as a checkpoint stores it),
continues with the same lrs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from hone.checkpoint import flatten, unflatten
from hone.config import ScheduleConfig
from hone.optim import SCHEDULES, build_schedule

BASE_LR, MIN_LR = 0.1, 1e-3
WARMUP_STEPS, TOTAL_STEPS, RELOAD_AT = 5, 60, 23


def config(name: str) -> ScheduleConfig:
    # Every decay reaches its floor within the run: step every 10 steps, halve per step or so.
    return ScheduleConfig(
        name=name,
        warmup_steps=WARMUP_STEPS,
        decay_steps=40,
        min_lr=MIN_LR,
        decay=0.2,
        step_size=10,
        gamma=0.5,
    )


def schedule(name: str) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=BASE_LR)
    return optimizer, build_schedule(config(name), optimizer, TOTAL_STEPS)


def run(
    optimizer: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, steps: int
) -> list[float]:
    """The lr of each of the next `steps` optimizer steps."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_lr_is_finite_and_within_min_lr_and_the_peak(name: str) -> None:
    lrs = run(*schedule(name), TOTAL_STEPS)
    for step, lr in enumerate(lrs):
        assert math.isfinite(lr) and MIN_LR * (1 - 1e-9) <= lr <= BASE_LR * (1 + 1e-9), (step, lr)


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_warmup_starts_low_and_climbs_to_the_peak(name: str) -> None:
    lrs = run(*schedule(name), WARMUP_STEPS)
    assert lrs[0] == pytest.approx(BASE_LR / WARMUP_STEPS)
    assert all(a < b for a, b in zip(lrs, lrs[1:], strict=False)), lrs
    assert lrs[-1] == pytest.approx(BASE_LR)


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_reload_mid_run_continues_with_the_same_lrs(name: str) -> None:
    optimizer, sched = schedule(name)
    run(optimizer, sched, RELOAD_AT)
    tree, tensors = flatten({"schedule": sched.state_dict(), "optimizer": optimizer.state_dict()})
    state = unflatten(json.loads(json.dumps(tree, allow_nan=False)), tensors)
    expected = run(optimizer, sched, TOTAL_STEPS - RELOAD_AT)

    fresh_optimizer, fresh = schedule(name)
    fresh_optimizer.load_state_dict(state["optimizer"])
    fresh.load_state_dict(state["schedule"])
    assert run(fresh_optimizer, fresh, TOTAL_STEPS - RELOAD_AT) == expected
