"""The course of a run, measured once for every rule: the training loss against where it
started, the validation loss against its best so far, and the lr against its peak.

Each rule judges a curve against the curve itself (its start, its best, its own noise) and
against the lr the run actually had, read from the logged lrs, never against a level fitted
to a benchmark.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from hone.doctor.evidence import Evidence
from hone.run_records import number

SMALL_LR = 0.01  # an lr under 1% of its peak takes steps a hundred times smaller: ~no progress
SPIKE_WINDOW = 5  # steps in the running median that finds the loss's peak (one bad batch is not)
MOMENTUM_STEPS = 10  # steps an optimizer's momentum (beta 0.9) carries on after the lr fell


def median(values: list[float], default: float = math.nan) -> float:
    return statistics.median(values) if values else default


@dataclass
class LossShape:
    """The training loss's course."""

    start: float  # the loss at step 0 (or the first segment's)
    end: float  # the last segment
    low: float  # the lowest segment
    peak: float  # the highest running median of SPIKE_WINDOW steps (or logged window mean)
    uniform: float  # the loss of a uniform prediction (nan if unknown)
    drop: float  # 1 - end / start: the fraction of the starting loss training removed
    rebound: float  # end / low: how far the loss climbed back from its best
    segments: list[float]  # medians of 10 equal segments of the run


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
    return LossShape(start, end, low, _peak(e), uniform, drop, rebound, segments)


def _peak(e: Evidence) -> float:
    """The highest the training loss went: a running median over SPIKE_WINDOW steps when every
    step's loss was recorded (a single bad batch is not a climb), else the highest logged
    window mean (itself a mean over log.every steps)."""
    per_step = [x for x in e.step_losses if math.isfinite(x)]
    if len(per_step) >= 4 * SPIKE_WINDOW:
        return max(
            statistics.median(per_step[i : i + SPIKE_WINDOW])
            for i in range(len(per_step) - SPIKE_WINDOW + 1)
        )
    return max((loss for _, loss, _ in e.train if math.isfinite(loss)), default=math.nan)


@dataclass
class LrCourse:
    """The lr the run actually had (the logged lr of the first parameter group), not the
    configured one: a schedule may have taken it far below `optim.lr`."""

    points: list[tuple[int, float]]  # (step, lr), by step
    peak: float
    typical: float  # the median over the run
    end: float
    small_from: int | None  # the step from which the lr stayed under SMALL_LR of its peak
    steps: int  # the steps the run took

    @property
    def decayed_early(self) -> bool:
        """Whether the lr sat under 1% of its peak for at least half of the run."""
        return self.small_from is not None and self.small_from <= self.steps / 2


def lr_course(e: Evidence) -> LrCourse | None:
    logged = {s: lr for s, _, lr in e.train if math.isfinite(lr)}
    for record in e.layers:
        lr = number(record.get("lr"))
        if math.isfinite(lr):
            logged.setdefault(int(record["step"]), lr)
    points = sorted(logged.items())
    if len(points) < 3:
        return None
    peak = max(lr for _, lr in points)
    # Without warm-up a schedule starts at its base lr, which the first log (after log.every
    # steps of decay) may already be far below.
    if int(e.get("schedule.warmup_steps", 0) or 0) == 0:
        peak = max(peak, e.base_lr)
    small_from = None
    for s, lr in reversed(points):
        if lr >= SMALL_LR * peak:
            break
        small_from = s
    typical = median([lr for _, lr in points])
    return LrCourse(points, peak, typical, points[-1][1], small_from, max(e.steps, points[-1][0]))


@dataclass
class Curve:
    """A validation curve judged against its own best: where it bottomed out, where it ended,
    and how much it jitters from one evaluation to the next."""

    steps: list[int]
    values: list[float]
    best_index: int
    noise: float  # the median change between consecutive evaluations after the best

    @property
    def best(self) -> float:
        return self.values[self.best_index]

    @property
    def best_step(self) -> int:
        return self.steps[self.best_index]

    @property
    def after_best(self) -> list[float]:
        return self.values[self.best_index + 1 :]

    @property
    def end_level(self) -> float:
        """Where the curve settled: the median of the last third of the evaluations after its
        best (at least 3), so that one lucky or unlucky evaluation does not decide."""
        tail = self.after_best
        return median(tail[-max(3, len(tail) // 3) :], self.best)


def val_curve(e: Evidence) -> Curve | None:
    points = [(s, loss) for s, loss, _ in e.val if math.isfinite(loss)]
    if len(points) < 3:
        return None
    steps, values = [s for s, _ in points], [v for _, v in points]
    best_index = min(range(len(values)), key=values.__getitem__)
    tail = values[best_index + 1 :]
    noise = median([abs(b - a) for a, b in zip(tail, tail[1:], strict=False)], 0.0)
    return Curve(steps, values, best_index, noise)


def train_loss_near(e: Evidence, step: int) -> float:
    """The training loss about `step`: the median of the logged window means within a
    twentieth of the run (at least 10 steps) of it."""
    reach = max(10, e.steps // 20)
    near = [loss for s, loss, _ in e.train if abs(s - step) <= reach and math.isfinite(loss)]
    return median(near)


def loss_about(e: Evidence, step: int) -> float:
    """The training loss about `step`: the median of the per-step losses within a quarter
    of `step` of it (at least one step) when statistics recorded them, else of the logged
    window means near it; the initial loss at step 0."""
    if step <= 0:
        return number(e.run.get("initial_loss"))
    per_step = e.step_losses  # per_step[i] is the loss of step i + 1
    if len(per_step) >= step:
        reach = max(1, step // 4)
        window = per_step[max(step - 1 - reach, 0) : step + reach]
        return median([x for x in window if math.isfinite(x)])
    return train_loss_near(e, step)
