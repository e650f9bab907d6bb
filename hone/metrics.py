"""Metrics by name, each knowing whether lower or higher is better.

Early stopping, best checkpoints, the run summary and the tuner all ask `direction` here,
so a metric's direction is written once. Keys carry a split prefix (`val_perplexity`,
`test_accuracy`, `best_val_loss`); the metric is what follows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hone.errors import ConfigError, did_you_mean

Direction = Literal["min", "max"]


@dataclass(frozen=True)
class Metric:
    """A metric by name and direction; a user's own also has `fn(outputs, targets)`, called
    once per evaluation with the outputs and targets of the whole split (so that metrics that
    are not means over batches, F1 or AUC, come out exact) and returning a number."""

    name: str
    direction: Direction
    help: str = ""
    fn: Callable[[Any, Any], Any] | None = None


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("loss", "min", "the training loss, mean per sample (per token for LMs)"),
        Metric("perplexity", "min", "exp(loss) of a language model"),
        Metric("accuracy", "max", "fraction of samples classified right"),
        Metric("r2", "max", "coefficient of determination of a regression"),
    )
}

# Prefixes of the keys that hold a metric, longest first.
_PREFIXES = ("best_val_", "final_val_", "train_", "val_", "test_")


def metric_of(key: str) -> Metric | None:
    """The metric a key such as 'val_perplexity' or 'best_val_loss' holds; None if none."""
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    return METRICS.get(key)


def direction(key: str) -> Direction:
    """'min' or 'max' for a metric key; a ConfigError naming the known metrics otherwise."""
    metric = metric_of(key)
    if metric is None:
        known = [f"val_{name}" for name in METRICS]
        raise ConfigError(
            f"{key!r} is not a metric hone knows the direction of{did_you_mean(key, known)}; "
            f"use one of: {', '.join(known)}"
        )
    return metric.direction


def is_better(key: str, value: float, best: float | None, min_delta: float = 0.0) -> bool:
    """Whether `value` improves on `best` by more than `min_delta` (NaN never improves)."""
    if not math.isfinite(value):
        return False
    if best is None or not math.isfinite(best):
        return True
    if direction(key) == "min":
        return value < best - min_delta
    return value > best + min_delta


def worst(key: str) -> float:
    """The starting 'best' of a metric: +inf when minimized, -inf when maximized."""
    return math.inf if direction(key) == "min" else -math.inf


BUILT_IN = frozenset(METRICS)


def register_metric(metric: Metric) -> Metric:
    """Make a user's metric known by name, so that early stopping, best checkpoints, the
    summary and the tuner treat it as they treat a built-in one. Registering the same name
    again replaces it (a notebook cell run twice); a built-in name is refused."""
    if metric.name in BUILT_IN:
        raise ConfigError(f"metric {metric.name!r} is built in; give your metric another name")
    if metric.direction not in ("min", "max"):
        raise ConfigError(
            f"metric {metric.name!r}: direction must be 'min' or 'max', got {metric.direction!r}"
        )
    if metric.fn is None or not callable(metric.fn):
        raise ConfigError(f"metric {metric.name!r} needs a function fn(outputs, targets)")
    METRICS[metric.name] = metric
    return metric


def user_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Metric]:
    """`{name: Metric | (fn, direction) | fn-with-direction}` as handed to `hone.Trainer`,
    registered and returned by name."""
    out: dict[str, Metric] = {}
    for name, spec in (metrics or {}).items():
        if isinstance(spec, Metric):
            metric = spec if spec.name == name else Metric(name, spec.direction, spec.help, spec.fn)
        elif isinstance(spec, tuple | list) and len(spec) == 2:
            fn, way = spec
            metric = Metric(name, way, "", fn)
        else:
            raise ConfigError(
                f"metrics[{name!r}] must be hone.Metric(name, 'max', fn=...) or (fn, 'max'|'min'), "
                f"got {type(spec).__name__}"
            )
        out[name] = register_metric(metric)
    return out


def configured_metrics(names: list[str]) -> dict[str, Metric]:
    """The user metrics `train.metrics` names, each registered with a function."""
    out = {}
    for name in names:
        metric = METRICS.get(name)
        if metric is None or metric.fn is None:
            raise ConfigError(
                f"train.metrics names {name!r}, which no code registered; call "
                f"hone.register_metric(hone.Metric({name!r}, 'max', fn=...)) in a module beside "
                "your TOML (hone imports it), or leave it out with --train.metrics=[]"
            )
        out[name] = metric
    return out
