"""Schedules: lr at chosen steps against hand-computed values, through LambdaLR and resume."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hone.config import ScheduleConfig
from hone.errors import ConfigError
from hone.optim import SCHEDULES, build_schedule, lr_factor


def lrs_through_scheduler(cfg: ScheduleConfig, lr: float, total_steps: int) -> list[float]:
    """The lr each optimizer step 0..total_steps-1 runs with, as the engine sees it."""
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=lr)
    schedule = build_schedule(cfg, optimizer, total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return lrs


def test_gpt_recipe_warmup_then_cosine() -> None:
    cfg = ScheduleConfig(name="cosine", warmup_steps=100, decay_steps=2000, min_lr=1e-4)
    lr = 1e-3
    lrs = lrs_through_scheduler(cfg, lr, 2501)
    cosine_1000 = 1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi * 900 / 1900))
    expected = {
        0: 1e-3 / 100,
        50: 1e-3 * 51 / 100,
        99: 1e-3,
        100: 1e-3,
        1000: cosine_1000,  # 1e-4 + 9e-4 * 0.5 * (1 + cos(0.4737 pi)) = 5.8716e-4
        2000: 1e-4,
        2500: 1e-4,
    }
    for step, value in expected.items():
        assert lrs[step] == pytest.approx(value, rel=1e-9), step
        assert lr * lr_factor(cfg, step, 2501, base_lr=lr) == pytest.approx(value, rel=1e-9)
    assert cosine_1000 == pytest.approx(5.8716e-4, rel=1e-4)


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (ScheduleConfig(name="constant"), {0: 1.0, 7: 1.0, 99: 1.0}),
        (ScheduleConfig(name="constant", warmup_steps=4), {0: 0.25, 2: 0.75, 3: 1.0, 50: 1.0}),
        (ScheduleConfig(name="inverse_time", decay=0.5), {0: 1.0, 2: 0.5, 6: 0.25}),
        (ScheduleConfig(name="step", step_size=10, gamma=0.5), {0: 1, 9: 1, 10: 0.5, 25: 0.25}),
        (ScheduleConfig(name="exponential", gamma=0.9), {0: 1.0, 1: 0.9, 3: 0.729}),
        # the decay clock starts when warmup ends
        (ScheduleConfig(name="exponential", gamma=0.9, warmup_steps=2), {1: 1.0, 2: 1.0, 4: 0.81}),
        (ScheduleConfig(name="cosine"), {0: 1.0, 50: 0.5, 100: 0.0}),
        (ScheduleConfig(name="linear", min_lr=0.2), {0: 1.0, 25: 0.8, 50: 0.6, 100: 0.2}),
        (ScheduleConfig(name="linear", warmup_steps=20, decay_steps=60), {40: 0.5, 60: 0.0}),
        # wsd: stable to step 80, then linear to min_lr at step 100
        (
            ScheduleConfig(name="wsd", warmup_steps=10, decay_fraction=0.2, min_lr=0.1),
            {4: 0.5, 10: 1.0, 80: 1.0, 90: 0.55, 100: 0.1, 120: 0.1},
        ),
        # min_lr floors the schedules that decay without a target too
        (ScheduleConfig(name="exponential", gamma=0.5, min_lr=0.1), {2: 0.25, 3: 0.125, 9: 0.1}),
    ],
)
def test_factor_at_chosen_steps(cfg: ScheduleConfig, expected: dict[int, float]) -> None:
    for step, value in expected.items():
        assert lr_factor(cfg, step, 100) == pytest.approx(value, abs=1e-12), step


def test_min_lr_is_absolute() -> None:
    cfg = ScheduleConfig(name="cosine", decay_steps=100, min_lr=0.01)
    assert lr_factor(cfg, 100, 100, base_lr=0.1) == pytest.approx(0.1)
    assert lrs_through_scheduler(cfg, 0.1, 101)[100] == pytest.approx(0.01)


def test_resumed_scheduler_continues_exactly() -> None:
    cfg = ScheduleConfig(name="wsd", warmup_steps=3, decay_steps=20)
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.5)
    schedule = build_schedule(cfg, optimizer, 20)
    for _ in range(17):
        optimizer.step()
        schedule.step()
    state = schedule.state_dict()
    assert "optimizer" not in state and state["lr_lambdas"] == [{}]  # plain numbers only

    fresh_optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.5)
    fresh = build_schedule(cfg, fresh_optimizer, 20)
    fresh_optimizer.load_state_dict(optimizer.state_dict())
    fresh.load_state_dict(state)
    for _ in range(3):
        for opt, sched in ((optimizer, schedule), (fresh_optimizer, fresh)):
            opt.step()
            sched.step()
        assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_every_schedule_is_tested() -> None:
    assert SCHEDULES.names() == [
        "constant", "cosine", "exponential", "inverse_time", "linear", "step", "wsd"
    ]  # fmt: skip


def test_unknown_schedule_lists_names() -> None:
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="unknown schedule 'cosin'.*constant, cosine"):
        build_schedule(ScheduleConfig(name="cosin"), optimizer, 10)


@pytest.mark.parametrize(
    ("cfg", "total_steps", "message"),
    [
        (ScheduleConfig(name="cosine"), 0, "must know where its decay ends"),
        (ScheduleConfig(name="constant", min_lr=1.0), 10, "schedule.min_lr must be at most"),
    ],
)
def test_bad_schedules_raise_config_error(
    cfg: ScheduleConfig, total_steps: int, message: str
) -> None:
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=message):
        build_schedule(cfg, optimizer, total_steps)


def test_run_shorter_than_warmup_warms_up_then_sits_at_min_lr() -> None:
    cfg = ScheduleConfig(name="cosine", warmup_steps=20, min_lr=1e-4)
    assert lr_factor(cfg, 4, 5, base_lr=1e-3) == pytest.approx(5 / 20)
    assert lr_factor(cfg, 25, 5, base_lr=1e-3) == pytest.approx(0.1)
