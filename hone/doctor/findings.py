"""Findings and what every rule shares: the measured shape of the loss, the update ratio,
and how fixes are written (config overrides)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from hone.doctor.evidence import Evidence, number

SEVERITIES = ("error", "warning", "info")
IDS = (
    "vanishing_gradients",
    "exploding_gradients",
    "dead_units",
    "saturated_units",
    "bad_initialization",
    "lr_too_high",
    "lr_too_low",
    "oscillation",
    "plateau",
    "overfitting",
    "input_scale",
    "non_finite",
)
SATURATING = ("Tanh", "Sigmoid", "Hardtanh", "Hardsigmoid")
RELU = ("ReLU", "ReLU6")


@dataclass
class Finding:
    id: str
    severity: str
    evidence: dict[str, Any]
    fix: list[str]
    why: str
    strength: float = 0.0
    summary: str = field(default="")

    def __post_init__(self) -> None:
        assert self.id in IDS and self.severity in SEVERITIES, (self.id, self.severity)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "summary": self.summary,
            "evidence": self.evidence,
            "fix": self.fix,
            "why": self.why,
            "strength": round(self.strength, 3),
        }


def lr_override(value: float) -> str:
    return f"--optim.lr={float(f'{value:.1g}'):g}"


def median(values: list[float], default: float = math.nan) -> float:
    return statistics.median(values) if values else default


def clip(x: float) -> float:
    return max(0.0, min(1.0, x))


@dataclass
class LossShape:
    """The training loss's course, measured once for every rule."""

    start: float  # the first segment (or the loss at step 0)
    end: float  # the last segment
    low: float  # the lowest segment
    uniform: float  # the loss of a uniform prediction (nan if unknown)
    drop: float  # 1 - end / start: the fraction of the starting loss training removed
    rebound: float  # end / low: how far the loss climbed back from its best
    segments: list[float]


def loss_shape(e: Evidence) -> LossShape | None:
    segments = e.loss_segments()
    if len(segments) < 3:
        return None
    # Where training began: the loss at step 0 (before any step could blow it up), else the
    # first segment's.
    initial = number(e.run.get("initial_loss"))
    start = initial if math.isfinite(initial) and initial > 0 else segments[0]
    end, low = segments[-1], min(segments)
    uniform = number(e.run.get("uniform_loss"))
    drop = 1.0 - end / start if start > 0 else 0.0
    rebound = end / low if low > 0 else 1.0
    return LossShape(start, end, low, uniform, drop, rebound, segments)


def update_ratio(e: Evidence) -> float:
    """The median update/weight ratio after the first tenth of the run (the warm-up)."""
    return median(e.series("update_ratio", 0.1) or e.series("update_ratio"))


ADAPTIVE = ("adam", "adamw", "muon", "rmsprop", "adagrad")
ADAPTIVE_LR_CAP = 3e-3  # adaptive optimizers step ~lr per weight: above this few networks train


def lower_lr(e: Evidence, factor: float) -> str:
    """`--optim.lr=` lowered by `factor`; for adaptive optimizers at most ADAPTIVE_LR_CAP."""
    lr = e.lr * factor
    if e.optimizer in ADAPTIVE and e.lr > ADAPTIVE_LR_CAP:
        lr = min(lr, ADAPTIVE_LR_CAP)
    return lr_override(lr)


def swings(series: list[float], scale: float, rise: float = 1.3, share: float = 0.05) -> int:
    """How many times `series` climbs back up by 30% from its running low, and by at least
    `share` of `scale` (so that noise near zero does not count)."""
    count, low = 0, series[0] if series else 0.0
    for x in series[1:]:
        if x < low:
            low = x
        elif x > low * rise and x - low > share * scale:
            count, low = count + 1, x
    return count


def init_for(e: Evidence) -> str:
    if e.model == "gpt":
        return "default"
    return "xavier_normal" if e.activation in ("tanh", "sigmoid") else "kaiming_normal"


def lr_decayed(e: Evidence) -> bool:
    """Whether the schedule took the lr below 1% of its peak before the last tenth of the run."""
    lrs = [(s, lr) for s, _, lr in e.train if math.isfinite(lr)]
    if len(lrs) < 5:
        return False
    peak = max(lr for _, lr in lrs)
    low = [s for s, lr in lrs if lr < 0.01 * peak]
    return bool(low) and low[0] < 0.9 * lrs[-1][0]


def rounded(x: float) -> float | None:
    return float(f"{x:.3g}") if math.isfinite(x) else None
