"""Metrics by name, each knowing whether lower or higher is better.

Early stopping, best checkpoints, the run summary and the tuner all ask `direction` here,
so a metric's direction is written once. Keys carry a split prefix (`val_perplexity`,
`test_accuracy`, `best_val_loss`); the metric is what follows it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from hone.errors import ConfigError, did_you_mean

Direction = Literal["min", "max"]


@dataclass(frozen=True)
class Metric:
    name: str
    direction: Direction
    help: str


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
