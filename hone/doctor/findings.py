"""Findings: every id with its one-line definition, what a severity says, and what every rule
shares: the update ratio and how fixes are written (config overrides)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hone.doctor.curves import median
from hone.doctor.evidence import Evidence

SEVERITY_MEANINGS = {  # how sure a finding is
    "error": (
        "the mechanism's full signature is in the run, and it cost the run (its loss, its "
        "units, its steps); the first error is the diagnosis"
    ),
    "warning": (
        "part of the signature, or a cost that may be benign (a run that had converged "
        "anyway, a rise not far above the noise)"
    ),
    "info": "present but handled as configured (early stopping that caught overfitting)",
}
SEVERITIES = tuple(SEVERITY_MEANINGS)

DEFINITIONS = {  # every finding id, with the line `hone doctor --list-findings` prints
    "vanishing_gradients": (
        "the first layers' gradients are a tiny fraction of the last layers': the early "
        "layers barely learn"
    ),
    "exploding_gradients": "the first layers' gradients are many times the last layers'",
    "dead_units": "ReLU units that are zero on every sample, and so get no gradient",
    "saturated_units": (
        "tanh/sigmoid units stuck in their flat tails, passing on almost no gradient"
    ),
    "bad_initialization": (
        "the initial weights give a loss far above a uniform guess's, or an activation scale "
        "that grows or shrinks across depth at step 0"
    ),
    "lr_too_high": (
        "the steps overshoot: the loss climbed to twice where it started, or ended far above "
        "its best, with large steps"
    ),
    "lr_too_low": (
        "the lr the run actually had (the logged one) moved the weights too little: the loss "
        "fell only a little along a steady direction"
    ),
    "oscillation": "the loss climbs back from its best again and again while coming down",
    "plateau": (
        "the loss stopped improving far from done: the schedule took the lr under 1% of its "
        "peak in the first half of the run, or training never left a uniform guess"
    ),
    "overfitting": (
        "the validation loss rose well above its best and stayed there while the training "
        "loss kept falling"
    ),
    "input_scale": "unnormalized input features on scales orders of magnitude apart",
    "non_finite": "the loss or the gradients became NaN or infinite",
}
IDS = tuple(DEFINITIONS)

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


def clip(x: float) -> float:
    return max(0.0, min(1.0, x))


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


def rounded(x: float) -> float | None:
    return float(f"{x:.3g}") if math.isfinite(x) else None
