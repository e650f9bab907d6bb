"""The rules: one function per finding id, each reading the evidence for its mechanism
(hone.doctor.network: the network's insides; hone.doctor.course: the size of the steps;
hone.doctor.progress: where progress stopped, plateaus and overfitting), measured on the
run's curves (hone.doctor.curves) against themselves: their start, their best so far, their
own jitter, and the lr the run actually had against its peak.

A rule returns a `Finding` or None. Its `strength` (0..1) orders findings of one severity:
how far past its threshold the evidence is, and for causes that produce other symptoms (a
bad initialization saturates units; a too-high learning rate kills them) a higher base, so
that the cause is named first and its symptoms after it.

Thresholds are the mechanisms' own scales, not fitted to a benchmark:
- update/weight ratio per step: about 1e-3..3e-2 while a network learns; under 1e-4 the
  weights barely move, over 1e-1 each step rewrites a tenth of them.
- gradient cosine between consecutive steps: about 0 (minibatch noise) to positive
  (a consistent descent direction); strongly negative when steps bounce across a valley.
- the first/last layer gradient-norm ratio: within 1e-2..1e2 when gradients flow.
- units: a healthy ReLU layer has about half its activations at zero on each sample, but
  few units zero on a whole batch; a tanh/sigmoid unit past |x| > 2.2 / 4.4 passes on under
  5% of its gradient.
- the loss against its start: twice the untrained model's loss is worse than not training.
- the validation loss against its best: a tenth above it, and three times the jitter between
  evaluations, sustained over the last third of the evaluations after the best.
- the lr against its peak: under 1% of it, a step is a hundredth of the size; a schedule
  that holds it there for half of the run has ended training at half time.
"""

from __future__ import annotations

from collections.abc import Callable

from hone.doctor.course import lr_too_high, lr_too_low, non_finite, oscillation
from hone.doctor.curves import LossShape, loss_shape
from hone.doctor.evidence import Evidence
from hone.doctor.findings import DEFINITIONS, IDS, SEVERITIES, SEVERITY_MEANINGS, Finding
from hone.doctor.network import (
    bad_initialization,
    dead_units,
    exploding_gradients,
    input_scale,
    saturated_units,
    vanishing_gradients,
)
from hone.doctor.progress import overfitting, plateau

__all__ = [
    "DEFINITIONS",
    "IDS",
    "RULES",
    "SEVERITIES",
    "SEVERITY_MEANINGS",
    "Finding",
    "LossShape",
    "loss_shape",
]


RULES: tuple[Callable[[Evidence, LossShape | None], Finding | None], ...] = (
    non_finite,
    bad_initialization,
    vanishing_gradients,
    exploding_gradients,
    dead_units,
    saturated_units,
    input_scale,
    lr_too_high,
    lr_too_low,
    oscillation,
    plateau,
    overfitting,
)
