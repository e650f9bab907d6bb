"""Independent checks: is a pathology really present in a run? Computed from the run's files.

One function per finding id the doctor reports (ids read from `hone doctor --json` output),
plus `healthy`. Each answers a `Verdict` with the figures it used, so a reader can see why a
case counted as valid or not. The thresholds are the textbook reading of each pathology and
were fixed before the doctor's first pass; none is fitted to the doctor's answers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.doctor_blind.record import RunRecord


@dataclass
class Verdict:
    present: bool
    evidence: dict[str, Any] = field(default_factory=dict)


def _round(value: float) -> float | None:
    return None if not math.isfinite(value) else float(f"{value:.4g}")


def non_finite(run: RunRecord, level: float) -> Verdict:
    """The loss or a gradient became NaN/inf (in a log, a skipped step, or the run's end)."""
    ended_by_guard = "non-finite" in str(run.status.get("error", ""))
    present = run.any_non_finite() or ended_by_guard or run.returncode == 3
    first = next((f["step"] for f in run.faults if "step" in f), None)
    return Verdict(present, {"ended_by_guard": ended_by_guard, "first_fault_step": first})


def lr_too_high(run: RunRecord, level: float) -> Verdict:
    """Finite, but the loss climbed to 1.5x its start or more, and the run ended above `level`."""
    start = run.initial_loss()
    peak = max((loss for _, loss in run.smoothed_train()[1:]), default=math.nan)
    end = run.final_val_loss()
    present = (
        not run.any_non_finite()
        and math.isfinite(peak)
        and peak >= 1.5 * start
        and not end <= level
    )
    return Verdict(present, {"start": _round(start), "peak": _round(peak), "end": _round(end)})


def lr_too_low(run: RunRecord, level: float) -> Verdict:
    """The loss went down, but under 20% of the way, with the lr never decayed and the
    gradients reaching every layer (so the small steps, not the network, hold it back)."""
    start, end = run.initial_loss(), run.final_train_loss()
    drop = (start - end) / start if start else math.nan
    peak = max((loss for _, loss in run.smoothed_train()), default=math.nan)
    lr_kept = run.final_lr() / run.peak_lr() if run.peak_lr() else math.nan
    ratios = [run.weight_layer_grad_ratio(row) for row in run.layers]
    ratio = statistics.median([r for r in ratios if math.isfinite(r)] or [math.nan])
    present = (
        0.0 < drop < 0.2
        and peak <= 1.1 * start
        and lr_kept >= 0.5
        and not ratio < 1e-2
        and not run.final_val_loss() <= level
    )
    return Verdict(
        present,
        {
            "drop": _round(drop),
            "lr_end_over_peak": _round(lr_kept),
            "grad_ratio_first_last": _round(ratio),
        },
    )


def plateau(run: RunRecord, level: float) -> Verdict:
    """The lr fell under 1% of its peak within the first 30% of the run, and the loss then
    stalled (moved under 10% from a little after that point to the end) well above what the
    setup reaches (`level`). The validation loss is judged where there is one (it has no
    mini-batch noise), else the smoothed training loss."""
    peak = run.peak_lr()
    small = next((s for s, _, lr in run.train if lr <= 0.01 * peak), None)
    if small is None or not run.train:
        return Verdict(False, {"lr_small_at_step": None})
    # the steps just after the cut still carry optimizer momentum: judge from a bit later
    judged_from = small + max(5, run.last_step // 20)
    later_val = [loss for step, loss in run.val if step >= judged_from]
    if len(later_val) >= 3:
        curve, at_small, end = "val", later_val[0], later_val[-1]
    else:
        curve, at_small, end = "train", run.train_loss_at(judged_from), run.final_train_loss()
    moved = abs(at_small - end) / at_small if at_small else math.nan
    present = small <= 0.3 * run.last_step and moved < 0.1 and not run.final_val_loss() <= level
    return Verdict(
        present,
        {
            "lr_small_at_step": small,
            "curve": curve,
            "loss_then": _round(at_small),
            "loss_end": _round(end),
            "moved": _round(moved),
            "val_end": _round(run.final_val_loss()),
        },
    )


def overfitting(run: RunRecord, level: float) -> Verdict:
    """The validation loss bottomed out in the first 60% of the run and ended 20% (and 0.05)
    above its minimum, while the training loss kept falling (under 95% of its value there)."""
    if len(run.val) < 4:
        return Verdict(False, {"val_points": len(run.val)})
    best_step, best = min(run.val, key=lambda pair: pair[1])
    end = run.val[-1][1]
    train_then, train_end = run.train_loss_at(best_step), run.final_train_loss()
    present = (
        best_step <= 0.6 * run.last_step
        and end >= 1.2 * best
        and end - best >= 0.05
        and train_end <= 0.95 * train_then
    )
    return Verdict(
        present,
        {
            "best_val": _round(best),
            "best_step": best_step,
            "final_val": _round(end),
            "train_at_best": _round(train_then),
            "train_end": _round(train_end),
        },
    )


def oscillation(run: RunRecord, level: float) -> Verdict:
    """The validation loss jumped back up by 30% or more at three evaluations or more, while
    coming down overall (its minimum at most 80% of its first value)."""
    losses = [loss for _, loss in run.val]
    if len(losses) < 4 or run.any_non_finite():
        return Verdict(False, {"val_points": len(losses)})
    rebounds = sum(1 for a, b in zip(losses, losses[1:], strict=False) if b >= 1.3 * a)
    present = rebounds >= 3 and min(losses) <= 0.8 * losses[0]
    return Verdict(
        present,
        {"val_rebounds": rebounds, "val_first": _round(losses[0]), "val_min": _round(min(losses))},
    )


def dead_units(run: RunRecord, level: float) -> Verdict:
    """A ReLU layer that started mostly alive (<= 30% dead) ends with >= 50% of its units dead
    on every sample (the trainer's recorded dead fraction)."""
    if len(run.layers) < 2:
        return Verdict(False, {"stats_rows": len(run.layers)})
    first = run.activation_layers(run.layers[0], ("ReLU",))
    last = run.activation_layers(run.layers[-1], ("ReLU",))
    died = [
        (a.get("name"), a.get("dead_fraction", 0.0), b.get("dead_fraction", 0.0))
        for a, b in zip(first, last, strict=False)
        if a.get("dead_fraction", 0.0) <= 0.3 and b.get("dead_fraction", 0.0) >= 0.5
    ]
    return Verdict(bool(died), {"died": [(n, _round(s), _round(e)) for n, s, e in died]})


def saturated_units(run: RunRecord, level: float) -> Verdict:
    """A tanh/sigmoid layer has >= 50% of its units saturated in at least half of the recorded
    statistics rows."""
    rows = run.layers
    if not rows:
        return Verdict(False, {"stats_rows": 0})
    worst = []
    for row in rows:
        fractions = [
            a.get("saturated_fraction", 0.0)
            for a in run.activation_layers(row, ("Tanh", "Sigmoid"))
        ]
        worst.append(max(fractions, default=0.0))
    share = sum(1 for w in worst if w >= 0.5) / len(worst)
    return Verdict(
        share >= 0.5, {"rows_saturated_share": _round(share), "worst_fraction": _round(max(worst))}
    )


def vanishing_gradients(run: RunRecord, level: float) -> Verdict:
    """The first weight layer's gradient is under 1e-3 of the last's (median over the recorded
    rows), and the loss fell under 20% from its start."""
    ratios = [run.weight_layer_grad_ratio(row) for row in run.layers]
    ratios = [r for r in ratios if math.isfinite(r)]
    if not ratios:
        return Verdict(False, {"stats_rows": len(run.layers)})
    ratio = statistics.median(ratios)
    start, end = run.initial_loss(), run.final_train_loss()
    drop = (start - end) / start if start else math.nan
    present = ratio < 1e-3 and drop < 0.2
    return Verdict(present, {"grad_ratio_first_last": _round(ratio), "drop": _round(drop)})


def bad_initialization(run: RunRecord, level: float) -> Verdict:
    """A classifier (or language model) whose first loss is 3x that of a uniform prediction
    (ln of the number of classes) or more: the initial weights give confident wrong outputs."""
    classes = run.num_outputs()
    if classes < 2 or run.config_value("loss.name") != "cross_entropy":
        return Verdict(False, {"classes": classes})
    uniform = math.log(classes)
    start = run.initial_loss()
    return Verdict(
        start >= 3 * uniform, {"initial_loss": _round(start), "uniform_loss": _round(uniform)}
    )


def input_scale(run: RunRecord, level: float) -> Verdict:
    """Unnormalized inputs (`data.normalize = 'none'`) whose feature standard deviations span
    a factor of 100 or more (or reach |x| >= 100), measured on the data file itself, and a run
    that ended above `level`."""
    path = run.config_value("data.path")
    if run.config_value("data.normalize") != "none" or not path or not Path(path).exists():
        return Verdict(False, {"normalize": run.config_value("data.normalize")})
    features = np.load(path)["X"].astype(np.float64)
    std = features.std(axis=0)
    spread = float(std.max() / max(np.median(std), 1e-12))
    abs_max = float(np.abs(features).max())
    end = run.final_val_loss()
    present = (spread >= 100 or abs_max >= 100) and not end <= level
    return Verdict(
        present, {"std_spread": _round(spread), "abs_max": _round(abs_max), "val_end": _round(end)}
    )


CHECKS: dict[str, Callable[[RunRecord, float], Verdict]] = {
    "non_finite": non_finite,
    "lr_too_high": lr_too_high,
    "lr_too_low": lr_too_low,
    "plateau": plateau,
    "overfitting": overfitting,
    "oscillation": oscillation,
    "dead_units": dead_units,
    "saturated_units": saturated_units,
    "vanishing_gradients": vanishing_gradients,
    "bad_initialization": bad_initialization,
    "input_scale": input_scale,
}


def healthy(run: RunRecord, level: float) -> Verdict:
    """Trained fine: finite, the validation loss ended at or under `level` and within 15% (+0.02)
    of its best, the training loss fell by 40% or more (or to `level`), and no pathology check
    fires."""
    end = run.final_val_loss()
    best = min((loss for _, loss in run.val), default=end)
    start, train_end = run.initial_loss(), run.final_train_loss()
    fired = [name for name, check in CHECKS.items() if check(run, level).present]
    present = (
        not run.any_non_finite()
        and run.returncode == 0
        and end <= level
        and end <= 1.15 * best + 0.02
        and (train_end <= 0.6 * start or train_end <= level)
        and not fired
    )
    return Verdict(
        present,
        {
            "val_end": _round(end),
            "val_best": _round(best),
            "train_start": _round(start),
            "train_end": _round(train_end),
            "pathologies_seen": fired,
        },
    )


def quality(run: RunRecord) -> float:
    """The figure a fix must improve: the final validation loss (inf when it is not finite)."""
    end = run.final_val_loss()
    if run.any_non_finite() or not math.isfinite(end):
        return math.inf
    return end
