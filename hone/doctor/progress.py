"""Rules that read where progress stopped: a plateau (the schedule took the lr away early,
or training never left a uniform guess) and overfitting (the validation loss turned back up
from its best while the training loss kept falling).

Both judge a curve against itself: its start, its best so far and its own jitter from one
evaluation to the next, and the lr against its own peak.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from hone.doctor.course import lr_too_low
from hone.doctor.curves import (
    MOMENTUM_STEPS,
    SMALL_LR,
    Curve,
    LossShape,
    LrCourse,
    loss_about,
    lr_course,
    median,
    train_loss_near,
    val_curve,
)
from hone.doctor.evidence import Evidence
from hone.doctor.findings import ADAPTIVE, Finding, clip, init_for, lr_override, rounded
from hone.run_records import number

STALLED = 0.05  # improved by under a twentieth of its value over the rest of the run: stopped
ROSE = 0.1  # a validation loss a tenth above its best is well above it ...
NOISE_MULTIPLE = 3  # ... when that is also 3x its jitter from one evaluation to the next


def plateau(e: Evidence, shape: LossShape | None) -> Finding | None:
    if shape is None:
        return None
    course = lr_course(e)
    if course is not None and course.decayed_early:
        return _lr_spent_early(e, shape, course)
    return _never_left_uniform(e, shape)


# ---------------------------------------------------------------- the lr decayed early


def _lr_spent_early(e: Evidence, shape: LossShape, course: LrCourse) -> Finding | None:
    """The lr sat under 1% of its peak for at least half of the run and the loss stopped
    improving there: the schedule, not the problem, ended training."""
    assert course.small_from is not None
    cut = course.small_from
    settled = cut + MOMENTUM_STEPS  # momentum carries the last large steps a little further
    then, later = _level_at(e, settled), _best_after(e, settled)
    if not (math.isfinite(then) and math.isfinite(later) and then > 0):
        return None
    improved = (then - later) / then
    if improved >= STALLED:
        return None  # still improving on the small lr: a late, gentle decay
    # Sure when the training loss was still falling as the lr went (it had not converged),
    # or when the loss never came down to half of where it began; else the run may have
    # converged before the cut, and the decay only spent the rest of it.
    before, at_cut = loss_about(e, cut // 2), loss_about(e, cut)
    falling = before > 0 and (before - at_cut) / before >= STALLED
    far = then >= 0.5 * shape.start
    severity = "error" if falling or far else "warning"
    steps = int(e.get("train.max_steps", 0) or 0) or course.steps
    evidence = {
        "schedule": e.get("schedule.name", "constant"),
        "lr_peak": rounded(course.peak),
        "lr_small_from_step": cut,
        "lr_at_end": rounded(course.end),
        "share_of_run_at_small_lr": round(1 - cut / course.steps, 2),
        "loss_then": rounded(then),
        "loss_best_after": rounded(later),
        "loss_start": rounded(shape.start),
        "still_falling_at_cut": falling,
    }
    why = (
        f"the schedule took the lr under {SMALL_LR:.0%} of its peak {course.peak:.2g} by step "
        f"{cut} of {course.steps}, and the loss improved by {max(improved, 0):.1%} from then on "
        f"({then:.3g} to {later:.3g}): the lr decayed too early; keep it up for most of the run"
    )
    strength = 0.8 + 0.15 * clip(1 - cut / course.steps)
    return Finding(
        "plateau",
        severity,
        evidence,
        _schedule_fix(e, steps),
        why,
        strength,
        "the lr decayed too early and the loss stopped improving",
    )


def _schedule_fix(e: Evidence, steps: int) -> list[str]:
    """The schedule's own knobs set so that the lr decays over the whole run and ends at 10%
    of its peak, never under it before the end (cosine over the run, the fallback, reaches
    10% at 90% of it)."""
    name = e.get("schedule.name", "constant")
    if name == "step":
        gamma = max(number(e.get("schedule.gamma", 0.1)), 0.1)
        cuts = max(1, math.floor(math.log(0.1) / math.log(gamma)))  # gamma ** cuts >= 0.1
        size = max(int(e.get("schedule.step_size", 1)), math.ceil(steps / (cuts + 1)))
        return [f"--schedule.step_size={size}", f"--schedule.gamma={gamma:g}"]
    if name == "exponential":
        return [f"--schedule.gamma={0.1 ** (1 / max(steps, 1)):.4g}"]  # gamma ** steps = 0.1
    if name == "inverse_time":
        return [f"--schedule.decay={9 / max(steps, 1):.2g}"]  # 1 / (1 + decay * steps) = 0.1
    if name in ("cosine", "linear", "wsd"):
        return ["--schedule.decay_steps=0"]  # decay over the whole run
    return ["--schedule.name=cosine", "--schedule.decay_steps=0"]


def _level_at(e: Evidence, step: int) -> float:
    """The loss at `step`, best so far: the lowest validation loss evaluated up to it (the
    first one when none was), else the training loss near it."""
    val = [(s, loss) for s, loss, _ in e.val if math.isfinite(loss)]
    if len(val) >= 3:
        before = [loss for s, loss in val if s <= step]
        return min(before) if before else val[0][1]
    return train_loss_near(e, step)


def _best_after(e: Evidence, step: int) -> float:
    """The lowest the loss got after `step`: the validation loss, else the training loss
    logged in the last tenth of the run."""
    val = [(s, loss) for s, loss, _ in e.val if math.isfinite(loss)]
    if len(val) >= 3:
        return min((loss for s, loss in val if s > step), default=math.nan)
    last = [loss for s, loss, _ in e.train if s >= 0.9 * e.steps and math.isfinite(loss)]
    return median(last)


# ---------------------------------------------------------------- never left a uniform guess


def _never_left_uniform(e: Evidence, shape: LossShape) -> Finding | None:
    """The training loss flat (under 2% from segment to segment) over 40% of the run or more,
    at 70% or more of the loss of a uniform prediction: the model still predicts the prior."""
    if not math.isfinite(shape.uniform) or shape.uniform <= 0:
        return None
    if lr_too_low(e, shape) is not None:
        return None  # flat because the steps are tiny: that finding says so
    segments = shape.segments
    best_start = best_length = start = length = 0
    for i, (a, b) in enumerate(zip(segments, segments[1:], strict=False)):
        if abs(b - a) / max(abs(a), 1e-12) < 0.02:
            start, length = (start, length + 1) if length else (i, 1)
            if length > best_length:
                best_start, best_length = start, length
        else:
            length = 0
    stretch = segments[best_start : best_start + best_length + 1]
    level = statistics.mean(stretch) / shape.uniform if stretch else 0.0
    if best_length < 4 or level < 0.7:
        return None
    severity = "error" if best_length >= 5 else "warning"
    first = e.layers[0]["layers"] if e.layers and e.layers[0]["step"] <= 1 else []
    stds = [number(r.get("act_std")) for r in first if "weight_norm" in r]
    stds = [x for x in stds if math.isfinite(x) and x > 0]
    collapsed = len(stds) >= 3 and stds[0] / stds[-1] >= 30  # the signal dies with depth
    if collapsed:
        fix = [f"--model.init={init_for(e)}", "--model.zero_bias=false"]
    elif e.optimizer not in ADAPTIVE:
        fix = ["--optim.name=adamw", "--optim.lr=0.001"]
    else:
        fix = [lr_override(e.lr * 3)]
    evidence = {
        "flat_share_of_run": round(best_length / max(len(segments) - 1, 1), 2),
        "flat_loss": rounded(statistics.mean(stretch)),
        "uniform_loss": rounded(shape.uniform),
        "activation_std_collapse": collapsed,
    }
    cause = " because the initial weights shrink the signal layer by layer" if collapsed else ""
    why = (
        f"the loss stayed flat for {best_length * 10}% of the run at {level:.0%} of the loss of a "
        f"uniform prediction: training is stuck{cause}"
    )
    # A collapsing signal is a cause; a flat loss alone is a symptom, named after the causes
    # other rules find (vanishing gradients, dead or saturated units, a bad init).
    strength = 0.8 if collapsed else 0.5 + 0.15 * clip((level - 0.7) / 0.3)
    return Finding(
        "plateau", severity, evidence, fix, why, strength, "the loss is stuck on a plateau"
    )


# ---------------------------------------------------------------- overfitting


def overfitting(e: Evidence, shape: LossShape | None) -> Finding | None:
    curve = val_curve(e)
    if curve is None or len(curve.after_best) < 3 or curve.best <= 0:
        return None  # a best at (or next to) the last evaluation has nothing to rise from
    rise = curve.end_level / curve.best - 1
    margin = curve.end_level - curve.best
    if rise < ROSE or margin < NOISE_MULTIPLE * curve.noise:
        return None
    train_at_best = train_loss_near(e, curve.best_step)
    train_end = train_loss_near(e, e.steps)
    # Memorizing: the training loss kept falling (by a tenth at least) past the validation
    # loss's best; at a noise floor both sit still and nothing is memorized.
    if not (math.isfinite(train_at_best) and train_end <= 0.9 * train_at_best):
        return None
    stopped = (e.summary or {}).get("stop_reason") == "early_stopping"
    # Sure: a rise of a quarter of the best, or of a quarter of what the validation loss had
    # gained since the start (a language model's loss sits far above zero: 0.7 nats back up
    # from 2.8 is a rise of a quarter of its best but half of its gain), or a training loss
    # that fell tenfold past the validation loss's best (the fit to the training split kept
    # improving by an order of magnitude while validation got worse). A smaller rise alone
    # may be the noise of a small split.
    start = max(curve.values[0], number(e.run.get("initial_loss")), key=_finite_or_low)
    gained = start - curve.best
    gave_back = margin / gained if gained > 0 else 0.0
    sure = rise >= 0.25 or gave_back >= 0.25 or train_end <= 0.1 * train_at_best
    severity = "info" if stopped else ("error" if sure else "warning")
    gap = curve.end_level - train_end
    evidence: dict[str, Any] = {
        "best_val_loss": rounded(curve.best),
        "best_step": curve.best_step,
        "val_loss_end": rounded(curve.end_level),
        "evaluations_after_best": len(curve.after_best),
        "share_of_gain_given_back": round(gave_back, 3),
        "val_loss_jitter": rounded(curve.noise),
        "train_loss_at_best": rounded(train_at_best),
        "train_loss_end": rounded(train_end),
        **_metric_course(e, curve),
    }
    worse_metric = evidence.pop("_metric_worse", False)
    why = (
        f"the validation loss rose {rise:.0%} above its best ({curve.best:.3g} at step "
        f"{curve.best_step}) and stayed there for {len(curve.after_best)} evaluations while the "
        f"training loss fell from {train_at_best:.3g} to {train_end:.3g}: the model memorizes "
        "the training split" + ("; early stopping ended the run, as configured" if stopped else "")
    )
    strength = 0.5 + 0.35 * clip(rise / 1.0) + (0.05 if worse_metric else 0.0)
    # Stop as soon as this run's validation loss climbed: patience is the number of
    # evaluations it took to rise a tenth above its best (at least 2: one evaluation may be
    # noise), so that a rerun stops before it climbs further.
    climbed = next(
        (i for i, v in enumerate(curve.after_best, 1) if v > curve.best * (1 + ROSE)),
        len(curve.after_best),
    )
    patience = min(max(climbed, 2), 10)
    fix = _regularize(e, gap, patience)
    return Finding("overfitting", severity, evidence, fix, why, strength, "the model overfits")


def _finite_or_low(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _metric_course(e: Evidence, curve: Curve) -> dict[str, Any]:
    """The task metric (summary.json's `metric`, a user's own included, in its direction) at
    the validation loss's best and where it ended; `_metric_worse` when it got worse too."""
    by_step = {s: m for s, _, m in e.val if math.isfinite(m)}
    if not e.metric or e.metric_direction not in ("min", "max") or curve.best_step not in by_step:
        return {}
    later = [by_step[s] for s in curve.steps[curve.best_index + 1 :] if s in by_step]
    if not later:
        return {}
    at_best, end = by_step[curve.best_step], median(later[-max(3, len(later) // 3) :])
    worse = end < at_best if e.metric_direction == "max" else end > at_best
    return {
        f"val_{e.metric}_at_best": rounded(at_best),
        f"val_{e.metric}_end": rounded(end),
        "_metric_worse": worse,
    }


def _regularize(e: Evidence, gap: float, patience: int) -> list[str]:
    """Dropout, weight decay (decoupled for AdamW/Muon; else an L2 penalty sized to the
    generalization gap), and early stopping after `patience` evaluations without a new best,
    keeping the best weights."""
    fix = []
    dropout = number(e.get("model.dropout", 0.0))
    if e.model in ("mlp", "cnn", "gpt") and dropout < 0.5:
        fix.append(f"--model.dropout={0.2 if dropout < 0.2 else 0.5:g}")
    if e.optimizer in ("adamw", "muon"):
        decay = number(e.get("optim.weight_decay", 0.0))
        fix.append(f"--optim.weight_decay={0.1 if decay < 0.1 else min(3 * decay, 1.0):g}")
    else:
        fix.append(f"--reg.l2={_l2_for(e, gap):.1g}")
    fix += [f"--train.patience={patience}", "--train.keep_best=true"]
    return fix


def _l2_for(e: Evidence, gap: float) -> float:
    """An L2 coefficient whose penalty, l2 * |w|^2 at the weights the run ended with, is worth
    about the generalization gap (validation minus training loss): the loss's own scale, so
    that an MSE in the hundreds gets a penalty that matters and a cross-entropy near 0.1 one
    that does not swamp it. At least 3x the configured one."""
    norm = median([number(r.get("weight_norm")) for r in e.layers[-1:]])
    current = number(e.get("reg.l2", 0.0))
    if not (math.isfinite(norm) and norm > 0 and math.isfinite(gap) and gap > 0):
        return max(1e-4, 3 * current)
    return max(gap / norm**2, 3 * current)
