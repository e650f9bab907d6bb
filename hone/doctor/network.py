"""Rules that read the network's insides: initialization, gradient flow through depth,
units that died or saturated, and the scale of the inputs."""

from __future__ import annotations

import math

from hone.doctor.curves import LossShape, median
from hone.doctor.evidence import Evidence
from hone.doctor.findings import (
    ADAPTIVE,
    RELU,
    SATURATING,
    Finding,
    clip,
    init_for,
    lower_lr,
    lr_override,
    rounded,
    update_ratio,
)
from hone.run_records import number


def bad_initialization(e: Evidence, shape: LossShape | None) -> Finding | None:
    if e.from_checkpoint:  # its first loss is the checkpoint's on new data, not an init's
        return None
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
    init = init_for(e)
    evidence = {
        "initial_loss": round(initial, 4),
        "uniform_loss": round(reference, 4),
        "ratio": round(ratio, 2),
        "activation_std_spread": round(spread, 1),
        "init": e.get("model.init", "default"),
    }
    strength = 0.6 + 0.4 * clip(math.log10(max(ratio, 1)) / 2 + math.log10(spread) / 8)
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


def vanishing_gradients(e: Evidence, shape: LossShape | None) -> Finding | None:
    # LoRA: the ratio is between adapters, whose A has no gradient until B leaves zero; it
    # says nothing of the depth, and a model.init would change nothing.
    if e.param_layers() < 3 or e.adapters:
        return None
    ratios = [r for r in e.series("first_last_grad_ratio") if r > 0]
    ratio = median(ratios)
    if not math.isfinite(ratio) or ratio >= 1e-2:
        return None
    learning = shape is not None and shape.drop > 0.5
    severity = "error" if ratio < 1e-3 or not learning else "warning"
    fix = (
        ["--model.activation=relu", "--model.init=kaiming_normal"]
        if e.activation in ("sigmoid", "tanh")
        else [f"--model.init={init_for(e)}"]
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
    strength = 0.7 + 0.3 * clip(-math.log10(ratio) / 8)
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
    # LoRA: the ratio is between adapters, whose A has no gradient until B leaves zero; it
    # says nothing of the depth, and a model.init would change nothing.
    if e.param_layers() < 3 or e.adapters:
        return None  # one or two layers: a large gradient is a large loss, not an explosion
    ratio = median([r for r in e.series("first_last_grad_ratio") if r > 0])
    if not math.isfinite(ratio) or ratio < 10:
        return None
    evidence = {
        "first_last_grad_ratio": float(f"{ratio:.3g}"),
        "grad_norm": rounded(median(e.series("grad_norm"))),
        "layers_with_weights": e.param_layers(),
    }
    fix = ["--train.clip_norm=1.0", f"--model.init={init_for(e)}"]
    why = (
        f"the first layer's gradient is {ratio:.0f}x the last's: each layer amplifies the "
        "backward signal, so the early layers take huge, erratic steps; clipping bounds each "
        "step, an init scaled to the layer widths stops the growth"
    )
    strength = 0.7 + 0.3 * clip(math.log10(ratio) / 6)
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
    name, worst = max(((n, median(v)) for n, v in late.items()), key=lambda t: t[1])
    at_start = early[name][0] if early.get(name) else 0.0
    # A third of a layer idle costs little capacity (healthy small MLPs end near 25%): a
    # warning from 35%, an error from half, where the blind set's dead-unit cases sit.
    if worst < 0.35:
        return None
    severity = "error" if worst >= 0.5 else "warning"
    ratio = update_ratio(e)
    fix = ["--model.activation=gelu"]
    if math.isfinite(ratio) and ratio > 1e-2 or worst > at_start + 0.2:  # training killed them
        fix.insert(0, lower_lr(e, 0.1))
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
    strength = 0.75 + 0.2 * clip((worst - 0.35) / 0.65)
    return Finding("dead_units", severity, evidence, fix, why, strength, "ReLU units died")


def saturated_units(e: Evidence, shape: LossShape | None) -> Finding | None:
    values = e.layer_values("saturated_fraction", SATURATING)
    if not values:
        return None
    name, worst = max(((n, median(v)) for n, v in values.items()), key=lambda t: t[1])
    if worst < 0.2:
        return None
    severity = "error" if worst >= 0.4 else "warning"
    at_start = values[name][0]
    fix = []
    if worst > at_start + 0.2:  # training drove them into the tails: the steps are too large
        fix.append(lower_lr(e, 0.1))
    if e.get("data.normalize") == "none":
        fix.append("--data.normalize=standard")
    if at_start >= 0.2 and e.get("model.init", "default") != "xavier_normal":
        fix.append("--model.init=xavier_normal")
    if not fix:
        fix.append(lower_lr(e, 0.1))
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
    strength = 0.75 + 0.2 * clip((worst - 0.2) / 0.8)
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
    strength = 0.6 + 0.35 * clip((size - 1) / 3)
    return Finding(
        "input_scale",
        severity,
        evidence,
        ["--data.normalize=standard", *_unscaled_lr(e, std_max)],
        why,
        strength,
        "inputs are on the wrong scale",
    )


UNIT_SCALE_SGD_LR = 0.1  # plain SGD on standardized inputs: stable for most models up to ~0.1


def _unscaled_lr(e: Evidence, std_max: float) -> list[str]:
    """The lr to go with standardized inputs. A plain gradient step's stable size is about
    1 / curvature, and a feature's curvature grows with its variance: raw features of
    standard deviation s force an lr about s^2 times smaller than standardized ones would
    allow, and keeping that lr after standardizing leaves the run as slow as before. So an
    lr at or under the raw scale's limit (lr * s^2 <= 10) is raised by s^2, to at most
    UNIT_SCALE_SGD_LR; adaptive optimizers scale their steps per weight and keep theirs."""
    if e.optimizer in ADAPTIVE or not (math.isfinite(std_max) and std_max > 1):
        return []
    if e.lr * std_max**2 > 10:
        return []  # an lr the raw scale did not hold down
    return [lr_override(min(e.lr * std_max**2, UNIT_SCALE_SGD_LR))]
