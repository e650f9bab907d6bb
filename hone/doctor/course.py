"""Rules that read the size of the steps in the course of the loss: divergence and NaN, steps
too large or too small (judged at the lr the run actually had), and oscillation."""

from __future__ import annotations

import math
from typing import Any

from hone.doctor.curves import LossShape, lr_course, median
from hone.doctor.evidence import Evidence
from hone.doctor.findings import (
    ADAPTIVE,
    ADAPTIVE_LR_CAP,
    Finding,
    clip,
    lower_lr,
    lr_override,
    rounded,
    swings,
    update_ratio,
)
from hone.run_records import number


def non_finite(e: Evidence, shape: LossShape | None) -> Finding | None:
    skipped = [f for f in e.faults if f.get("event") == "skipped_step"]
    nan_logged = [s for s, loss, _ in e.train if not math.isfinite(loss)]
    if not (skipped or nan_logged or e.non_finite):
        return None
    first = e.non_finite[0] if e.non_finite else {}
    evidence: dict[str, Any] = {
        "skipped_steps": len(skipped),
        "first_step": min(
            [f["step"] for f in skipped] + nan_logged + [f["step"] for f in e.non_finite]
        ),
        "ended_by_guard": e.summary is None and bool(skipped),
    }
    if nan_logged:
        evidence["non_finite_logged_losses"] = len(nan_logged)
    if first:
        evidence.update(
            {k: first[k] for k in ("origin", "name", "type", "trend", "loss_growth") if k in first}
        )
    origin, trend = first.get("origin", ""), first.get("trend", "")
    # float32 overflows near 1e38: a loss that grows geometrically from about 1 to overflow
    # in k steps multiplies its error by about 10^(19/k) a step, the factor by which the lr
    # overshoots the stable edge. Slower growth or a jump: a tenth.
    k = evidence["first_step"]
    factor = 10.0 ** -min(max(math.ceil(19 / max(k, 1)), 1), 6) if trend == "grew" else 0.1
    fix = [lower_lr(e, factor), "--train.clip_norm=1.0"]
    where = f" in {origin} {first.get('name', '')}".rstrip() if origin else ""
    if origin == "input":
        why = "the inputs themselves hold NaN/inf: clean the data; until then clipping cannot help"
        fix = ["--data.normalize=standard"]
    elif trend == "jumped":
        why = (
            f"the values jumped to non-finite at once{where}: one large step; clip the gradient "
            "norm and take smaller steps"
        )
    else:
        why = (
            f"the loss and weights grew over the steps before{where}: the learning rate is past "
            "stability; a smaller lr (and clipping) keeps the steps bounded"
        )
    return Finding(
        "non_finite", "error", evidence, fix, why, 1.0, "the loss or gradients went NaN/inf"
    )


def lr_too_high(e: Evidence, shape: LossShape | None) -> Finding | None:
    if shape is None:
        return None
    ratio = update_ratio(e)
    largest = max(e.series("update_ratio"), default=math.nan)
    # Large steps: the median step moves the weights by over 1% of their norm, or some step
    # rewrote a tenth of them (adaptive optimizers at a high lr do so in their first steps).
    big_steps = not math.isfinite(ratio) or ratio > 1e-2 or largest > 0.1
    # Twice as bad as the untrained model, even if it came back: the steps overshot.
    spiked = shape.peak >= 2 * shape.start
    # Ended far above its best and no lower than it began; unless the loss keeps coming back
    # down to its best, where the end is only the phase of an oscillation.
    diverged = shape.rebound > 1.5 and shape.end > 0.9 * shape.start and not oscillating(e, shape)
    above_uniform = (
        math.isfinite(shape.uniform)
        and shape.end > 1.2 * shape.uniform
        and shape.low < shape.uniform
    )
    thrashing = shape.drop < 0.1 and math.isfinite(ratio) and ratio > 3e-2
    # Ending at twice where it began (and above a uniform guess): whatever the step sizes
    # say (adaptive optimizers normalize them), training made the model worse.
    worse = shape.end > 2 * shape.start and not (
        math.isfinite(shape.uniform) and shape.end <= shape.uniform
    )
    if not ((spiked or diverged or above_uniform) and big_steps or thrashing or worse):
        return None
    peak = max(shape.peak, max(shape.segments))
    evidence = {
        "loss_start": rounded(shape.start),
        "loss_peak": rounded(peak),
        "loss_lowest": rounded(shape.low),
        "loss_end": rounded(shape.end),
        "update_ratio": rounded(ratio),
        "largest_update_ratio": rounded(largest),
        "lr": e.lr,
    }
    # Orders of magnitude past stable (the loss many times a uniform guess, or growing
    # without bound) need a hundredth; a loss that stays bounded, a tenth.
    far = peak / max(shape.low, 1e-30) >= 100 or (
        math.isfinite(shape.uniform) and shape.end >= 10 * shape.uniform
    )
    why = (
        f"the loss climbed to {peak:.3g} (from {shape.start:.3g}, lowest {shape.low:.3g}) while "
        f"steps moved the weights by up to {largest:.1e} of their norm: the steps overshoot; a "
        "smaller lr descends"
    )
    # Below dead or saturated units' strength: when a large lr killed or saturated units,
    # those name the damage and their fix lowers the lr too.
    strength = 0.7 + 0.2 * clip(math.log10(peak / max(shape.low, 1e-30)) / 3)
    return Finding(
        "lr_too_high",
        "error",
        evidence,
        [lower_lr(e, 0.01 if far else 0.1)],
        why,
        strength,
        "the learning rate is too high",
    )


def lr_too_low(e: Evidence, shape: LossShape | None) -> Finding | None:
    course = lr_course(e)
    if shape is None or course is not None and course.decayed_early:
        return None  # a schedule that took the lr to ~0 early is a plateau's cause
    ratio = update_ratio(e)
    cosine = median(e.series("grad_cosine", 0.1))
    val = [loss for _, loss, _ in e.val if math.isfinite(loss)]
    # The last validation loss against where training began: full passes, free of the
    # minibatch noise of training losses.
    drop = 1 - val[-1] / max(shape.start, val[0]) if len(val) >= 3 else shape.drop
    tiny_steps = math.isfinite(ratio) and ratio < 1e-4
    # Consecutive gradients that agree (cosine near 1): the descent direction hardly changes
    # from step to step, so each step covers a small part of the way.
    same_direction = math.isfinite(cosine) and cosine > 0.7
    if drop >= 0.2 or drop < -0.05 or not (tiny_steps or same_direction):
        return None  # (a loss that rose is not helped by a larger lr)
    if not tiny_steps and math.isfinite(ratio) and ratio > 3e-3:
        return None  # steps of ordinary size or larger: the direction agrees for another reason
    vanishing = median([r for r in e.series("first_last_grad_ratio") if r > 0], 1.0) < 1e-2
    if vanishing and e.param_layers() >= 3:
        return None  # the first layers' steps are tiny because their gradients are
    # On a quadratic bowl the loss falls as exp(-c lr t): a fall of `drop` in the run says how
    # many times larger lr * t must be to take the loss down by 1e-6 (clamped to 10..10^4).
    # The run's lr is the logged one; the fix scales optim.lr, which the schedule scales alike.
    speedup = math.log(1e6) / max(-math.log(max(1 - drop, 1e-12)), 1e-12)
    factor = 10 ** min(max(math.ceil(math.log10(speedup)), 1), 4)
    run_lr = course.typical if course is not None else e.lr
    lr = e.lr * factor
    if e.optimizer in ADAPTIVE:
        lr = min(lr, max(ADAPTIVE_LR_CAP, e.lr * 10))
    evidence = {
        "update_ratio": rounded(ratio),
        "grad_cosine": rounded(cosine),
        "loss_drop": round(drop, 3),
        "lr": rounded(run_lr),
        "lr_peak": rounded(course.peak) if course is not None else None,
    }
    why = (
        f"the loss fell only {drop:.0%} in {e.steps} steps at lr {run_lr:.2g} (as logged) while "
        f"each step moved the weights by {ratio:.1e} of their norm along a steady direction: "
        "the steps are too small"
    )
    strength = 0.7 + 0.25 * clip(1 - drop / 0.2)
    return Finding(
        "lr_too_low",
        "error",
        evidence,
        [lr_override(lr)],
        why,
        strength,
        "the learning rate is too low",
    )


def _swing_counts(e: Evidence, shape: LossShape) -> tuple[int, int, int]:
    """(training swings, validation swings, validation evaluations): climbs of 30% back up
    from the running best, in 20 segment medians of the training loss and in the full
    validation passes."""
    train = swings(e.loss_segments(20), shape.start)
    val_losses = [loss for _, loss, _ in e.val if math.isfinite(loss)]
    val = swings(val_losses, val_losses[0]) if len(val_losses) >= 3 else 0
    return train, val, len(val_losses)


def oscillating(e: Evidence, shape: LossShape) -> bool:
    """The loss came down (its best under 70% of its start: the lr can descend), never
    climbed to twice its start (swings past that are divergence: lr_too_high's), and climbed
    back from its running best again and again, in both the training segments and the full
    validation passes (either alone is noise: a hard minibatch, a small validation split)."""
    val_best = min((loss for _, loss, _ in e.val if math.isfinite(loss)), default=shape.low)
    if min(shape.low, val_best) > 0.7 * shape.start or shape.peak >= 2 * shape.start:
        return False
    train, val, num_val = _swing_counts(e, shape)
    return train >= 1 and (val >= 1 if num_val >= 5 else train >= 2) and train + val >= 2


def oscillation(e: Evidence, shape: LossShape | None) -> Finding | None:
    if shape is None:
        return None
    cosine = median(e.series("grad_cosine", 0.2))
    anti = math.isfinite(cosine) and cosine < -0.5  # period-2 bouncing across a valley
    swinging = oscillating(e, shape)
    if not (swinging or anti and shape.drop >= 0.3):
        return None
    train, val, _ = _swing_counts(e, shape)
    momentum = number(e.get("optim.momentum", 0.0))
    # Heavy-ball momentum beta multiplies the step by 1 / (1 - beta): 0.9 takes steps 10x the
    # lr, 0.99 100x; from >= 0.95 to 0.9 divides them by 2 or more and damps the ringing.
    fix = ["--optim.momentum=0.9"] if momentum >= 0.95 else [lower_lr(e, 0.3)]
    evidence = {
        "train_loss_swings": train,
        "val_loss_swings": val,
        "grad_cosine": rounded(cosine),
        "loss_drop": round(shape.drop, 3),
        "momentum": momentum or None,
    }
    why = (
        f"the loss climbed back by 30% or more {train + val} times (training {train}, validation "
        f"{val}) while coming down overall: the steps overshoot and ring"
        + ("; momentum near 1 keeps the overshoot going" if momentum >= 0.95 else "")
    )
    if not swinging:  # the gradients bounce across a valley, yet the loss comes down
        why = (
            f"consecutive gradients point against each other (cosine {cosine:.2f}): the steps "
            "bounce across a valley; the loss still came down, so this may cost little"
        )
    strength = 0.6 + 0.25 * clip((train + val) / 8)
    severity = "error" if swinging else "warning"
    return Finding("oscillation", severity, evidence, fix, why, strength, "the loss oscillates")
