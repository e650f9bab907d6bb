"""The rules: one function per finding id, each reading the evidence for its mechanism.

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
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
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


def _lr(value: float) -> str:
    return f"--optim.lr={float(f'{value:.1g}'):g}"


def _median(values: list[float], default: float = math.nan) -> float:
    return statistics.median(values) if values else default


def _clip(x: float) -> float:
    return max(0.0, min(1.0, x))


# ---------------------------------------------------------------- loss shape
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
    initial = number(e.run.get("initial_loss"))
    start = max(segments[0], initial) if math.isfinite(initial) else segments[0]
    end, low = segments[-1], min(segments)
    uniform = number(e.run.get("uniform_loss"))
    drop = 1.0 - end / start if start > 0 else 0.0
    rebound = end / low if low > 0 else 1.0
    return LossShape(start, end, low, uniform, drop, rebound, segments)


def _update_ratio(e: Evidence) -> float:
    """The median update/weight ratio after the first tenth of the run (the warm-up)."""
    return _median(e.series("update_ratio", 0.1) or e.series("update_ratio"))


ADAPTIVE = ("adam", "adamw", "muon", "rmsprop", "adagrad")
ADAPTIVE_LR_CAP = 3e-3  # adaptive optimizers step ~lr per weight: above this few networks train


def _lower_lr(e: Evidence, factor: float) -> str:
    """`--optim.lr=` lowered by `factor`; for adaptive optimizers at most ADAPTIVE_LR_CAP."""
    lr = e.lr * factor
    if e.optimizer in ADAPTIVE and e.lr > ADAPTIVE_LR_CAP:
        lr = min(lr, ADAPTIVE_LR_CAP)
    return _lr(lr)


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


def _lr_factor(ratio: float, target: float, lo: float, hi: float) -> float:
    """A power of ten that would bring the update ratio near `target`, within [lo, hi]."""
    if not math.isfinite(ratio) or ratio <= 0:
        return lo if lo > 1 else hi
    return min(max(10 ** round(math.log10(target / ratio)), lo), hi)


# ---------------------------------------------------------------- the rules
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
    fix = [_lower_lr(e, factor), "--train.clip_norm=1.0"]
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


def bad_initialization(e: Evidence, shape: LossShape | None) -> Finding | None:
    initial, uniform = number(e.run.get("initial_loss")), number(e.run.get("uniform_loss"))
    reference = number(e.run.get("zero_loss")) if e.run.get("zero_loss") else uniform
    reference = max(reference, uniform) if math.isfinite(uniform) else reference
    if not (math.isfinite(initial) and math.isfinite(reference) and reference > 0):
        return None
    ratio = initial / reference
    # Activation scale across depth at step 0: a good init keeps it within a few times.
    first = e.layers[0] if e.layers and e.layers[0]["step"] <= 1 else None
    spread = 1.0
    if first is not None:
        stds = [number(r.get("act_std")) for r in first["layers"] if "weight_norm" in r]
        stds = [s for s in stds if math.isfinite(s) and s > 0]
        if len(stds) >= 3:
            spread = max(stds[-1] / stds[0], stds[0] / stds[-1])
    if ratio < 1.5 and spread < 100:
        return None
    severity = "error" if ratio >= 3 or spread >= 1e3 else "warning"
    scale = e.run.get("input_scale") or {}
    if scale.get("normalize") == "none" and number(scale.get("abs_max")) >= 10:
        severity = "warning"  # unscaled inputs make the first outputs large, not the weights
    init = _init_for(e)
    evidence = {
        "initial_loss": round(initial, 4),
        "uniform_loss": round(reference, 4),
        "ratio": round(ratio, 2),
        "activation_std_spread": round(spread, 1),
        "init": e.get("model.init", "default"),
    }
    strength = 0.6 + 0.4 * _clip(math.log10(max(ratio, 1)) / 2 + math.log10(spread) / 8)
    why = (
        f"at step 0 the loss is {ratio:.1f}x that of a uniform prediction: the initial weights "
        "make confident wrong outputs; an init scaled to the layer widths starts near uniform"
    )
    return Finding(
        "bad_initialization",
        severity,
        evidence,
        [f"--model.init={init}"],
        why,
        strength,
        "the initialization is badly scaled",
    )


def _init_for(e: Evidence) -> str:
    if e.model == "gpt":
        return "default"
    return "xavier_normal" if e.activation in ("tanh", "sigmoid") else "kaiming_normal"


def vanishing_gradients(e: Evidence, shape: LossShape | None) -> Finding | None:
    if e.param_layers() < 3:
        return None
    ratios = [r for r in e.series("first_last_grad_ratio") if r > 0]
    ratio = _median(ratios)
    if not math.isfinite(ratio) or ratio >= 1e-2:
        return None
    learning = shape is not None and shape.drop > 0.5
    severity = "error" if ratio < 1e-3 or not learning else "warning"
    fix = (
        ["--model.activation=relu", "--model.init=kaiming_normal"]
        if e.activation in ("sigmoid", "tanh")
        else [f"--model.init={_init_for(e)}"]
    )
    evidence = {
        "first_last_grad_ratio": float(f"{ratio:.3g}"),
        "layers_with_weights": e.param_layers(),
        "activation": e.activation or None,
    }
    why = (
        f"the first layer's gradient is {ratio:.1e} of the last's: each layer shrinks the "
        "backward signal, so the early layers barely learn"
    )
    strength = 0.7 + 0.3 * _clip(-math.log10(ratio) / 8)
    return Finding(
        "vanishing_gradients",
        severity,
        evidence,
        fix,
        why,
        strength,
        "gradients vanish toward the input",
    )


def exploding_gradients(e: Evidence, shape: LossShape | None) -> Finding | None:
    if e.param_layers() < 3:
        return None  # one or two layers: a large gradient is a large loss, not an explosion
    ratio = _median([r for r in e.series("first_last_grad_ratio") if r > 0])
    if not math.isfinite(ratio) or ratio < 10:
        return None
    evidence = {
        "first_last_grad_ratio": float(f"{ratio:.3g}"),
        "grad_norm": _rounded(_median(e.series("grad_norm"))),
        "layers_with_weights": e.param_layers(),
    }
    fix = ["--train.clip_norm=1.0", f"--model.init={_init_for(e)}"]
    why = (
        f"the first layer's gradient is {ratio:.0f}x the last's: each layer amplifies the "
        "backward signal, so the early layers take huge, erratic steps; clipping bounds each "
        "step, an init scaled to the layer widths stops the growth"
    )
    strength = 0.7 + 0.3 * _clip(math.log10(ratio) / 6)
    return Finding(
        "exploding_gradients",
        "error",
        evidence,
        fix,
        why,
        strength,
        "gradients explode toward the input",
    )


def dead_units(e: Evidence, shape: LossShape | None) -> Finding | None:
    late = e.layer_values("dead_fraction", RELU, last=3)
    early = e.layer_values("dead_fraction", RELU)
    if not late:
        return None
    name, worst = max(((n, _median(v)) for n, v in late.items()), key=lambda t: t[1])
    at_start = early[name][0] if early.get(name) else 0.0
    if worst < 0.25:
        return None
    severity = "error" if worst >= 0.5 else "warning"
    ratio = _update_ratio(e)
    fix = ["--model.activation=gelu"]
    if math.isfinite(ratio) and ratio > 1e-2 or worst > at_start + 0.2:  # training killed them
        fix.insert(0, _lower_lr(e, 0.1))
    evidence = {
        "layer": name,
        "dead_fraction": round(worst, 3),
        "dead_fraction_at_start": round(at_start, 3),
        "update_ratio": float(f"{ratio:.3g}") if math.isfinite(ratio) else None,
    }
    why = (
        f"{worst:.0%} of layer {name}'s ReLU units are zero on every sample: they get no "
        "gradient and never recover; large steps push their biases negative"
    )
    strength = 0.65 + 0.3 * _clip((worst - 0.25) / 0.75)
    return Finding("dead_units", severity, evidence, fix, why, strength, "ReLU units died")


def saturated_units(e: Evidence, shape: LossShape | None) -> Finding | None:
    values = e.layer_values("saturated_fraction", SATURATING)
    if not values:
        return None
    name, worst = max(((n, _median(v)) for n, v in values.items()), key=lambda t: t[1])
    if worst < 0.2:
        return None
    severity = "error" if worst >= 0.4 else "warning"
    at_start = values[name][0]
    fix = []
    if worst > at_start + 0.2:  # training drove them into the tails: the steps are too large
        fix.append(_lower_lr(e, 0.1))
    if e.get("data.normalize") == "none":
        fix.append("--data.normalize=standard")
    if at_start >= 0.2 and e.get("model.init", "default") != "xavier_normal":
        fix.append("--model.init=xavier_normal")
    if not fix:
        fix.append(_lower_lr(e, 0.1))
    evidence = {
        "layer": name,
        "saturated_fraction": round(worst, 3),
        "saturated_fraction_at_start": round(at_start, 3),
        "activation": e.activation,
    }
    why = (
        f"{worst:.0%} of layer {name}'s pre-activations sit in the flat tails of the "
        f"{e.activation or 'squashing'} function, which pass on under 5% of the gradient; "
        "inputs and weights scaled to unit variance keep them in the slope"
    )
    strength = 0.65 + 0.3 * _clip((worst - 0.2) / 0.8)
    return Finding(
        "saturated_units",
        severity,
        evidence,
        fix,
        why,
        strength,
        "sigmoid/tanh units are saturated",
    )


def input_scale(e: Evidence, shape: LossShape | None) -> Finding | None:
    scale = e.run.get("input_scale") or {}
    if not scale or scale.get("normalize") != "none":
        return None
    std_max, std_median = number(scale.get("std_max")), number(scale.get("std_median"))
    abs_max = number(scale.get("abs_max"))
    spread = std_max / std_median if std_median > 0 else math.inf
    size = max(math.log10(max(spread, 1)), math.log10(max(abs_max, 1)), math.log10(max(std_max, 1)))
    if size < 1:
        return None
    severity = "error" if size >= 2 else "warning"
    evidence = {
        "feature_std_max": float(f"{std_max:.3g}"),
        "feature_std_median": float(f"{std_median:.3g}"),
        "abs_max": float(f"{abs_max:.3g}"),
        "normalize": "none",
    }
    why = (
        f"input features range up to {abs_max:.3g} with standard deviations from {std_median:.3g} "
        f"(median) to {std_max:.3g}: one lr cannot suit them all; standardize them"
    )
    strength = 0.6 + 0.35 * _clip((size - 1) / 3)
    return Finding(
        "input_scale",
        severity,
        evidence,
        ["--data.normalize=standard"],
        why,
        strength,
        "inputs are on the wrong scale",
    )


def lr_too_high(e: Evidence, shape: LossShape | None) -> Finding | None:
    if shape is None:
        return None
    ratio = _update_ratio(e)
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
    if not ((spiked or diverged or above_uniform) and big_steps or thrashing):
        return None
    evidence = {
        "loss_start": _rounded(shape.start),
        "loss_peak": _rounded(peak),
        "loss_lowest": _rounded(shape.low),
        "loss_end": _rounded(shape.end),
        "update_ratio": _rounded(ratio),
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
    strength = 0.7 + 0.25 * _clip(math.log10(peak / max(shape.low, 1e-30)) / 3)
    return Finding(
        "lr_too_high",
        "error",
        evidence,
        [_lower_lr(e, 0.01 if far else 0.1)],
        why,
        strength,
        "the learning rate is too high",
    )


def lr_too_low(e: Evidence, shape: LossShape | None) -> Finding | None:
    if shape is None or _lr_decayed(e):
        return None  # a schedule that took the lr to ~0 is a plateau's cause, not the lr
    ratio = _update_ratio(e)
    cosine = _median(e.series("grad_cosine", 0.1))
    val = [loss for _, loss, _ in e.val if math.isfinite(loss)]
    # The last validation loss against where training began: full passes, free of the
    # minibatch noise of training losses.
    drop = 1 - val[-1] / max(shape.start, val[0]) if len(val) >= 3 else shape.drop
    tiny_steps = math.isfinite(ratio) and ratio < 1e-4
    # Consecutive gradients that agree (cosine near 1): the descent direction hardly changes
    # from step to step, so each step covers a small part of the way.
    same_direction = math.isfinite(cosine) and cosine > 0.7
    if drop >= 0.2 or not (tiny_steps or same_direction):
        return None
    vanishing = _median([r for r in e.series("first_last_grad_ratio") if r > 0], 1.0) < 1e-2
    if vanishing and e.param_layers() >= 3:
        return None  # the first layers' steps are tiny because their gradients are
    # On a quadratic bowl the loss falls as exp(-c lr t): a fall of `drop` in the run says how
    # many times larger lr * t must be to take the loss down by 1e-6 (clamped to 10..1000).
    speedup = math.log(1e6) / max(-math.log(max(1 - drop, 1e-12)), 1e-12)
    factor = 10 ** min(max(math.ceil(math.log10(speedup)), 1), 3)
    lr = e.lr * factor
    if e.optimizer in ADAPTIVE:
        lr = min(lr, max(ADAPTIVE_LR_CAP, e.lr * 10))
    evidence = {
        "update_ratio": _rounded(ratio),
        "grad_cosine": _rounded(cosine),
        "loss_drop": round(drop, 3),
        "lr": e.lr,
    }
    why = (
        f"the loss fell only {drop:.0%} in {e.steps} steps while each step moved the weights by "
        f"{ratio:.1e} of their norm along a steady direction: the steps are too small"
    )
    strength = 0.7 + 0.25 * _clip(1 - drop / 0.2)
    return Finding(
        "lr_too_low", "error", evidence, [_lr(lr)], why, strength, "the learning rate is too low"
    )


def _lr_decayed(e: Evidence) -> bool:
    """Whether the schedule took the lr below 1% of its peak before the last tenth of the run."""
    lrs = [(s, lr) for s, _, lr in e.train if math.isfinite(lr)]
    if len(lrs) < 5:
        return False
    peak = max(lr for _, lr in lrs)
    low = [s for s, lr in lrs if lr < 0.01 * peak]
    return bool(low) and low[0] < 0.9 * lrs[-1][0]


def _rounded(x: float) -> float | None:
    return float(f"{x:.3g}") if math.isfinite(x) else None


def oscillation(e: Evidence, shape: LossShape | None) -> Finding | None:
    if shape is None or shape.drop < 0.3:
        return None  # a loss that does not come down while swinging: lr_too_high's case
    train = swings(e.loss_segments(20), shape.start)
    val_losses = [loss for _, loss, _ in e.val if math.isfinite(loss)]
    val = swings(val_losses, val_losses[0]) if len(val_losses) >= 3 else 0
    cosine = _median(e.series("grad_cosine", 0.2))
    # Healthy minibatch noise is averaged out of 20 segment medians and of full validation
    # passes; repeated climbs of 30% in both mean the iterate keeps overshooting.
    anti = math.isfinite(cosine) and cosine < -0.5  # period-2 bouncing across a valley
    if not (train >= 1 and train + val >= 2 or anti):
        return None
    momentum = number(e.get("optim.momentum", 0.0))
    fix = ["--optim.momentum=0.9"] if momentum >= 0.95 else [_lower_lr(e, 0.3)]
    evidence = {
        "train_loss_swings": train,
        "val_loss_swings": val,
        "grad_cosine": _rounded(cosine),
        "loss_drop": round(shape.drop, 3),
        "momentum": momentum or None,
    }
    why = (
        f"the loss climbed back by 30% or more {train + val} times (training {train}, validation "
        f"{val}) while coming down overall: the steps overshoot and ring"
        + ("; momentum near 1 keeps the overshoot going" if momentum >= 0.95 else "")
    )
    strength = 0.6 + 0.25 * _clip((train + val) / 8)
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
    decayed = _lr_decayed(e)
    first = e.layers[0]["layers"] if e.layers and e.layers[0]["step"] <= 1 else []
    stds = [number(r.get("act_std")) for r in first if "weight_norm" in r]
    stds = [x for x in stds if math.isfinite(x) and x > 0]
    collapsed = len(stds) >= 3 and stds[0] / stds[-1] >= 30  # the signal dies with depth
    peak = max((lr for _, _, lr in e.train if math.isfinite(lr)), default=e.lr)
    if decayed:
        fix = ["--schedule.name=cosine", f"--schedule.min_lr={peak * 0.1:.1g}"]
    elif collapsed:
        fix = [f"--model.init={_init_for(e)}", "--model.zero_bias=false"]
    elif e.optimizer not in ADAPTIVE:
        fix = ["--optim.name=adamw", "--optim.lr=0.001"]
    else:
        fix = [_lr(e.lr * 3)]
    evidence = {
        "flat_share_of_run": round(best_length / max(len(segments) - 1, 1), 2),
        "flat_loss": _rounded(statistics.mean(stretch)),
        "uniform_loss": _rounded(shape.uniform),
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
    strength = 0.55 + 0.3 * _clip((level - 0.7) / 0.3)
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
    noise = _median(
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
    train_falls = math.isfinite(train_at_best) and train_end < train_at_best
    # A steady climb (most evaluations after the best higher than the one before) is a trend;
    # jitter goes up and down.
    climbing = sum(1 for a, b in zip(tail, tail[1:], strict=False) if b > a) / max(len(tail) - 1, 1)
    trend = len(tail) >= 4 and climbing >= 0.6
    if rise < 1.1 or not train_falls or not (trend or above >= 0.75):
        return None
    stopped = (e.summary or {}).get("stop_reason") == "early_stopping"
    severity = "info" if stopped else ("error" if rise >= 1.25 or trend else "warning")
    fix = _regularize(e)
    evidence = {
        "best_val_loss": round(best, 4),
        "best_step": val[best_index][0],
        "final_val_loss": round(final, 4),
        "train_loss_at_best": round(train_at_best, 4),
        "train_loss_end": round(train_end, 4),
    }
    why = (
        f"validation loss rose {rise - 1:.0%} above its best (step {val[best_index][0]}) while the "
        "training loss kept falling: the model memorizes the training split"
        + ("; early stopping ended the run, as configured" if stopped else "")
    )
    strength = 0.5 + 0.4 * _clip((rise - 1.1) / 1.0)
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
