"""Every metric in `METRICS`, built in or a user's: a direction that `is_better`, `worst` and
early stopping agree on; a user's own registered by name, computed over a whole split, and
refused in one line when it is incomplete or shadows a built-in one."""

from __future__ import annotations

import math
from contextlib import nullcontext

import pytest
import torch

from hone.engine.early_stopping import EarlyStopping
from hone.engine.tasks import TASKS, evaluate
from hone.errors import ConfigError
from hone.metrics import (
    METRICS,
    Metric,
    configured_metrics,
    direction,
    is_better,
    register_metric,
    user_metrics,
    worst,
)


def _error_rate(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.argmax(-1) != y).float().mean()


@pytest.fixture
def error_rate():
    metric = register_metric(Metric("error_rate", "min", "1 - accuracy", _error_rate))
    yield metric
    METRICS.pop("error_rate")


@pytest.fixture(params=["built-in", "user"])
def every_metric(request, error_rate):
    return list(METRICS.values())


def test_every_metric_has_one_direction_everything_agrees_on(every_metric):
    for metric in every_metric:
        key = f"val_{metric.name}"
        assert direction(key) == metric.direction == direction(f"best_{key}")
        low, high = 1.0, 2.0
        better, other = (low, high) if metric.direction == "min" else (high, low)
        assert is_better(key, better, other) and not is_better(key, other, better)
        assert is_better(key, better, worst(key)) and not is_better(key, math.nan, other)
        stopping = EarlyStopping(key, patience=1, min_delta=0.0)
        assert stopping.best == worst(key)


def test_a_user_metric_is_computed_once_over_the_whole_split(error_rate):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 4, generator=g), torch.randint(0, 3, (50,), generator=g)
    model = torch.nn.Linear(4, 3)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 50, 16)]  # uneven last batch
    task = TASKS.get("classification")
    loss = torch.nn.functional.cross_entropy
    cpu = torch.device("cpu")
    result = evaluate(model, batches, loss, task, cpu, nullcontext, {"error_rate": error_rate})
    assert result["error_rate"] == pytest.approx(1 - result["accuracy"], abs=1e-6)
    assert result["error_rate"] == pytest.approx(float(_error_rate(model(x), y)), abs=1e-6)


def test_user_metrics_as_handed_to_the_trainer(error_rate):
    made = user_metrics({"top": (_error_rate, "max"), "error_rate": error_rate})
    assert made["top"].direction == "max" and METRICS["top"].fn is _error_rate
    assert configured_metrics(["top", "error_rate"]) == made
    METRICS.pop("top")
    # Registered again (a notebook cell run twice): the newer one counts.
    twice = register_metric(Metric("error_rate", "max", fn=_error_rate))
    assert METRICS["error_rate"] is twice


@pytest.mark.parametrize(
    "spec, message",
    [
        (Metric("accuracy", "max", fn=_error_rate), "built in"),
        (Metric("mine", "up", fn=_error_rate), "direction must be 'min' or 'max'"),  # type: ignore[arg-type]
        (Metric("mine", "max"), "needs a function"),
    ],
)
def test_bad_metrics_are_refused_in_one_line(spec, message):
    with pytest.raises(ConfigError, match=message) as error:
        register_metric(spec)
    assert "\n" not in str(error.value)
    assert "mine" not in METRICS


def test_a_configured_metric_nobody_registered_says_how():
    with pytest.raises(ConfigError, match="hone.register_metric"):
        configured_metrics(["nowhere"])
    with pytest.raises(ConfigError, match=r"\(fn, 'max'\|'min'\)"):
        user_metrics({"f1": 0.5})
