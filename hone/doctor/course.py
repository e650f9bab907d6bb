"""Rules that read the course of the loss: divergence and NaN, steps too large or too
small, oscillation, plateaus and overfitting."""

from __future__ import annotations

import math
import statistics
from typing import Any

from hone.doctor.evidence import Evidence, number
from hone.doctor.findings import (
    ADAPTIVE,
    ADAPTIVE_LR_CAP,
    Finding,
    LossShape,
    clip,
    init_for,
    lower_lr,
    lr_decayed,
    lr_override,
    median,
    rounded,
    swings,
    update_ratio,
)


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
    big_steps = not math.isfinite(ratio) or ratio > 1e-2
    peak = max(shape.segments)
    spiked = peak > 1.5 * shape.start  # climbed far above where it started, even if it came back
    diverged = shape.rebound > 1.5 and shape.end > 0.9 * shape.start
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
    evidence = {
        "loss_start": rounded(shape.start),
        "loss_peak": rounded(peak),
        "loss_lowest": rounded(shape.low),
        "loss_end": rounded(shape.end),
        "update_ratio": rounded(ratio),
        "lr": e.lr,
    }
    # Orders of magnitude past stable (the loss many times a uniform guess, or growing
    # without bound) need a hundredth; a loss that stays bounded, a tenth.
    far = peak / max(shape.low, 1e-30) >= 100 or (
        math.isfinite(shape.uniform) and shape.end >= 10 * shape.uniform
    )
    why = (
        f"the loss climbed to {peak:.3g} (from {shape.start:.3g}, lowest {shape.low:.3g}) while each "
        f"step moves the weights by {ratio:.1e} of their norm: the steps overshoot; a smaller lr descends"
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
    if shape is None or lr_decayed(e):
        return None  # a schedule that took the lr to ~0 is a plateau's cause, not the lr
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
    speedup = math.log(1e6) / max(-math.log(max(1 - drop, 1e-12)), 1e-12)
    factor = 10 ** min(max(math.ceil(math.log10(speedup)), 1), 4)
    lr = e.lr * factor
    if e.optimizer in ADAPTIVE:
        lr = min(lr, max(ADAPTIVE_LR_CAP, e.lr * 10))
    evidence = {
        "update_ratio": rounded(ratio),
        "grad_cosine": rounded(cosine),
        "loss_drop": round(drop, 3),
        "lr": e.lr,
    }
    why = (
        f"the loss fell only {drop:.0%} in {e.steps} steps while each step moved the weights by "
        f"{ratio:.1e} of their norm along a steady direction: the steps are too small"
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


def oscillation(e: Evidence, shape: LossShape | None) -> Finding | None:
    if shape is None or shape.drop < 0.3:
        return None  # a loss that does not come down while swinging: lr_too_high's case
    train = swings(e.loss_segments(20), shape.start)
    val_losses = [loss for _, loss, _ in e.val if math.isfinite(loss)]
    val = swings(val_losses, val_losses[0]) if len(val_losses) >= 3 else 0
    cosine = median(e.series("grad_cosine", 0.2))
    # Healthy minibatch noise is averaged out of 20 segment medians and of full validation
    # passes; repeated climbs of 30% in both mean the iterate keeps overshooting.
    anti = math.isfinite(cosine) and cosine < -0.5  # period-2 bouncing across a valley
    # Both the training segments and the full validation passes must climb back: either
    # alone is noise (a hard minibatch, a small validation split).
    has_val = len(val_losses) >= 5
    if not (train >= 1 and (val >= 1 if has_val else train >= 2) and train + val >= 2 or anti):
        return None
    momentum = number(e.get("optim.momentum", 0.0))
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
    strength = 0.6 + 0.25 * clip((train + val) / 8)
    return Finding("oscillation", "error", evidence, fix, why, strength, "the loss oscillates")


def plateau(e: Evidence, shape: LossShape | None) -> Finding | None:
    if shape is None or not math.isfinite(shape.uniform) or shape.uniform <= 0:
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
    decayed = lr_decayed(e)
    first = e.layers[0]["layers"] if e.layers and e.layers[0]["step"] <= 1 else []
    stds = [number(r.get("act_std")) for r in first if "weight_norm" in r]
    stds = [x for x in stds if math.isfinite(x) and x > 0]
    collapsed = len(stds) >= 3 and stds[0] / stds[-1] >= 30  # the signal dies with depth
    peak = max((lr for _, _, lr in e.train if math.isfinite(lr)), default=e.lr)
    if decayed:
        fix = ["--schedule.name=cosine", f"--schedule.min_lr={peak * 0.1:.1g}"]
    elif collapsed:
        fix = [f"--model.init={init_for(e)}", "--model.zero_bias=false"]
    elif e.optimizer not in ADAPTIVE:
        fix = ["--optim.name=adamw", "--optim.lr=0.001"]
    else:
        fix = [lr_override(e.lr * 3)]
    evidence = {
        "flat_share_of_run": round(best_length / max(len(segments) - 1, 1), 2),
        "flat_loss": rounded(statistics.mean(stretch)),
        "uniform_loss": rounded(shape.uniform),
        "lr_decayed": decayed,
        "activation_std_collapse": collapsed,
    }
    cause = (
        " because the schedule took the lr to ~0"
        if decayed
        else " because the initial weights shrink the signal layer by layer"
        if collapsed
        else ""
    )
    why = (
        f"the loss stayed flat for {best_length * 10}% of the run at {level:.0%} of the loss of a "
        f"uniform prediction: training is stuck{cause}"
    )
    strength = 0.55 + 0.3 * clip((level - 0.7) / 0.3)
    return Finding(
        "plateau", severity, evidence, fix, why, strength, "the loss is stuck on a plateau"
    )


def overfitting(e: Evidence, shape: LossShape | None) -> Finding | None:
    val = [(s, loss) for s, loss, _ in e.val if math.isfinite(loss)]
    if len(val) < 5:
        return None
    losses = [loss for _, loss in val]
    best_index = min(range(len(losses)), key=losses.__getitem__)
    best, final = losses[best_index], losses[-1]
    tail = losses[best_index + 1 :]
    if best_index > 0.75 * (len(losses) - 1) or len(tail) < 2 or best <= 0:
        return None
    # Sustained, not jitter: the later evaluations stay above the best by more than the
    # evaluation-to-evaluation noise before the best.
    noise = median(
        [
            abs(b - a)
            for a, b in zip(losses[: best_index + 1], losses[1 : best_index + 1], strict=False)
        ],
        0.0,
    )
    above = sum(1 for x in tail if x > best + max(noise, 0.02 * best)) / len(tail)
    rise = final / best
    train_at_best = _train_loss_near(e, val[best_index][0])
    train_end = e.train[-1][1] if e.train else math.nan
    # Memorizing: the training loss keeps falling (by a fifth at least) and ends well below
    # the validation loss; at a noise floor both sit still and nothing is memorized.
    train_falls = math.isfinite(train_at_best) and train_end < 0.8 * train_at_best
    gap = final / train_end if train_end > 0 else math.inf
    # A steady climb (most evaluations after the best higher than the one before) is a trend;
    # jitter goes up and down.
    climbing = sum(1 for a, b in zip(tail, tail[1:], strict=False) if b > a) / max(len(tail) - 1, 1)
    trend = len(tail) >= 4 and climbing >= 0.6
    if rise < 1.1 or not train_falls or gap < 1.5 or not (trend or above >= 0.75):
        return None
    stopped = (e.summary or {}).get("stop_reason") == "early_stopping"
    memorized = gap >= 10  # validation loss ten times the training loss
    strong = rise >= 1.25 or (memorized and (trend or above >= 0.75))
    severity = "info" if stopped else ("error" if strong else "warning")
    fix = _regularize(e)
    evidence = {
        "best_val_loss": round(best, 4),
        "best_step": val[best_index][0],
        "final_val_loss": round(final, 4),
        "train_loss_at_best": round(train_at_best, 4),
        "train_loss_end": round(train_end, 4),
        "val_to_train_loss": rounded(gap),
    }
    why = (
        f"validation loss rose {rise - 1:.0%} above its best (step {val[best_index][0]}) while the "
        "training loss kept falling: the model memorizes the training split"
        + ("; early stopping ended the run, as configured" if stopped else "")
    )
    strength = 0.5 + 0.4 * clip((rise - 1.1) / 1.0)
    return Finding("overfitting", severity, evidence, fix, why, strength, "the model overfits")


def _train_loss_near(e: Evidence, step: int) -> float:
    before = [loss for s, loss, _ in e.train if s <= step and math.isfinite(loss)]
    return before[-1] if before else math.nan


def _regularize(e: Evidence) -> list[str]:
    fix = []
    if e.model in ("mlp", "cnn", "gpt") and number(e.get("model.dropout", 0.0)) < 0.2:
        fix.append("--model.dropout=0.2")
    if e.optimizer in ("adamw", "muon"):
        fix.append("--optim.weight_decay=0.1")
    elif not e.get("reg.l2"):
        fix.append("--reg.l2=0.0001")
    fix += ["--train.patience=5", "--train.keep_best=true"]
    return fix
