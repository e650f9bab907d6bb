"""What the doctor benchmark (bench/doctor_cases.py) needs besides its cases: the CSV files it
trains on, and measurements of a finished run taken independently of `hone.doctor`.

The measurements check that a faulty setup really has its pathology: a `Probe` observer
records every step's loss and each layer's gradient norm while training, and `unit_activity`
reloads the final weights and counts dead and saturated units on the training inputs. None of
this reads the doctor's own statistics (stats.jsonl), so a case is verified even where the
doctor's observer is wrong.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from hone.engine.observers import Observer
from hone.run_files import RunFiles

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer

PROBE = "probe.json"  # the bench's own record, beside the run's files

# A unit counts as saturated on an input when its output is this close to a bound of its
# activation: tanh beyond +-0.99 (|x| > 2.65), sigmoid below 0.01 or above 0.99 (|x| > 4.6).
SATURATION = 0.99
# A unit counts as saturated when it is saturated on this share of the training inputs.
SATURATED_SHARE = 0.95


# ---------------------------------------------------------------- data


def write_csvs(data_dir: Path) -> dict[str, Path]:
    """scikit-learn's bundled tables as CSV files (header, features, target last), by name.

    breast_cancer: 569 tumours, 30 features whose scales differ by about 10^5 (areas in the
    thousands, fractal dimensions near 0.06), a binary target: a natural input-scale case.
    """
    from sklearn.datasets import load_breast_cancer  # type: ignore[import-untyped]

    data_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    bunch = load_breast_cancer()
    path = data_dir / "breast_cancer.csv"
    if not path.is_file():
        names = [name.replace(" ", "_") for name in bunch.feature_names]
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([*names, "malignant"])
            for row, target in zip(bunch.data, bunch.target, strict=True):
                writer.writerow([*(f"{v:.6g}" for v in row), int(target == 0)])
        tmp.replace(path)  # atomic: parallel workers never read half a file
    paths["breast_cancer"] = path
    return paths


# ---------------------------------------------------------------- while training


def _weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear, conv and embedding layers in forward (registration) order."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
    return [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]


class Probe(Observer):
    """Records each step's loss and, every `every` steps, each layer's weight-gradient norm
    (before clipping); `save` writes them to probe.json in the run directory."""

    def __init__(self, every: int = 5) -> None:
        self.every = every
        self.losses: list[float] = []  # one per finite step
        self.grads: list[dict[str, Any]] = []
        self.names: list[str] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        layers = _weighted_layers(trainer.model)
        self.names = [name for name, _ in layers]
        self.weights = [cast(torch.Tensor, module.weight) for _, module in layers]

    def on_after_backward(self, trainer: Trainer) -> None:
        step = trainer.state.step  # steps taken before this one
        if step % self.every:
            return
        norms = [float(w.grad.norm()) if w.grad is not None else 0.0 for w in self.weights]
        total = math.sqrt(sum(n * n for n in norms))
        self.grads.append({"step": step, "layers": norms, "total": total})

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        self.losses.append(float(loss))

    def save(self, run_dir: Path) -> None:
        record = {"names": self.names, "losses": self.losses, "grads": self.grads}
        (run_dir / PROBE).write_text(json.dumps(record))


# ---------------------------------------------------------------- after training


def read_probe(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / PROBE).read_text())


def read_events(run_dir: Path, split: str) -> list[dict[str, Any]]:
    """The run's metrics.jsonl events of one split ('train', 'val', 'fault'), in order."""
    events = []
    with RunFiles(run_dir).metrics.open() as f:
        for line in f:
            event = json.loads(line)
            if event.get("split") == split:
                events.append(event)
    return events


def uniform_loss(run_dir: Path) -> float:
    """The cross-entropy of a uniform guess, ln(classes or vocabulary); NaN for regression."""
    info = json.loads(RunFiles(run_dir).data_info.read_text())
    classes = info.get("vocab_size") or info.get("num_outputs", 0)
    if info.get("task") in ("classification", "lm") and classes > 1:
        return math.log(classes)
    return math.nan


@torch.no_grad()
def unit_activity(run_dir: Path, max_samples: int = 2048) -> list[dict[str, Any]]:
    """Per activation layer of the final model, on the training inputs: the share of units
    that are dead (ReLU output 0 on every input) and saturated (tanh/sigmoid output beyond
    SATURATION on SATURATED_SHARE of the inputs)."""
    from hone.data import build_data
    from hone.engine.inference import LoadedRun

    run = LoadedRun.load(run_dir, "cpu")
    x = build_data(run.cfg).train[0][:max_samples]  # type: ignore[attr-defined]
    outputs: list[tuple[str, nn.Module, torch.Tensor]] = []
    hooks = [
        module.register_forward_hook(
            lambda m, _inputs, out, name=name: outputs.append((name, m, out.flatten(1)))
        )
        for name, module in run.model.named_modules()
        if isinstance(module, nn.ReLU | nn.Tanh | nn.Sigmoid)
    ]
    try:
        run.model(x)
    finally:
        for hook in hooks:
            hook.remove()
    result = []
    for name, module, out in outputs:  # out: (N, units)
        dead = (out == 0).all(dim=0) if isinstance(module, nn.ReLU) else torch.zeros(0)
        if isinstance(module, nn.Tanh):
            saturated_on = out.abs() > SATURATION
        elif isinstance(module, nn.Sigmoid):
            saturated_on = (out < 1 - SATURATION) | (out > SATURATION)
        else:
            saturated_on = torch.zeros_like(out, dtype=torch.bool)
        saturated = saturated_on.float().mean(dim=0) >= SATURATED_SHARE
        result.append(
            {
                "name": name,
                "units": out.shape[1],
                "dead": float(dead.float().mean()) if dead.numel() else 0.0,
                "saturated": float(saturated.float().mean()),
            }
        )
    return result


def raw_feature_scales(run_dir: Path) -> tuple[float, float]:
    """(smallest, largest) standard deviation of the raw features of a CSV run's file."""
    import numpy as np

    from hone.config import load_config
    from hone.data.tabular import read_csv

    cfg = load_config(str(RunFiles(run_dir).config))
    x = read_csv(cfg.data)[0]
    std = np.std(x, axis=0)
    return float(std.min()), float(std.max())


# ---------------------------------------------------------------- checks
# Each factory returns a check: run directory -> (pathology present, evidence).

Check = Callable[[Path], tuple[bool, str]]


def vanishing(max_ratio: float = 1e-3) -> Check:
    """The first layer's gradient is < max_ratio of the last layer's (median over the run)."""

    def check(run: Path) -> tuple[bool, str]:
        grads = read_probe(run)["grads"]
        ratios = [g["layers"][0] / max(g["layers"][-1], 1e-30) for g in grads]
        ratio = statistics.median(ratios)
        return ratio < max_ratio, f"grad first/last layer {ratio:.1e} (< {max_ratio:g})"

    return check


def exploding(min_ratio: float = 10.0, min_norm: float = 10.0) -> Check:
    """Over the run (median of the records) the first layer's gradient is min_ratio x the
    last layer's, the backward pass amplifying through depth, and the total gradient norm is
    min_norm (healthy setups here: ratio 0.6-2.5, norm 0.1-1.2)."""

    def check(run: Path) -> tuple[bool, str]:
        grads = read_probe(run)["grads"]
        ratio = statistics.median(g["layers"][0] / max(g["layers"][-1], 1e-30) for g in grads)
        norm = statistics.median(g["total"] for g in grads)
        ok = ratio >= min_ratio and norm >= min_norm
        return ok, f"median grad first/last layer {ratio:.0f}, median grad norm {norm:.0f}"

    return check


def dead(min_fraction: float = 0.5) -> Check:
    """At least min_fraction of the hidden ReLU units output 0 on every training input."""

    def check(run: Path) -> tuple[bool, str]:
        layers = unit_activity(run)
        units = sum(layer["units"] for layer in layers)
        fraction = sum(layer["dead"] * layer["units"] for layer in layers) / units
        return fraction >= min_fraction, f"dead ReLU units {fraction:.0%} (>= {min_fraction:.0%})"

    return check


def saturated(min_fraction: float = 0.5) -> Check:
    """At least min_fraction of the tanh/sigmoid units are saturated on the training inputs."""

    def check(run: Path) -> tuple[bool, str]:
        layers = unit_activity(run)
        units = sum(layer["units"] for layer in layers)
        fraction = sum(layer["saturated"] * layer["units"] for layer in layers) / units
        return fraction >= min_fraction, f"saturated units {fraction:.0%} (>= {min_fraction:.0%})"

    return check


def initial_loss_above(factor: float) -> Check:
    """The first step's loss is factor x the loss of a uniform guess, ln(classes)."""

    def check(run: Path) -> tuple[bool, str]:
        first, uniform = read_probe(run)["losses"][0], uniform_loss(run)
        ok = first >= factor * uniform
        return ok, f"step-0 loss {first:.3g} = {first / uniform:.1f} x ln(C) (>= {factor:g})"

    return check


def loss_rises(factor: float = 2.0) -> Check:
    """The training loss, finite throughout, ends at or above its first value, or climbs to
    factor x it on the way."""

    def check(run: Path) -> tuple[bool, str]:
        first = read_probe(run)["losses"][0]
        losses = [e["loss"] for e in read_events(run, "train")]
        finite = all(math.isfinite(v) for v in losses) and not read_events(run, "fault")
        ok = finite and (losses[-1] >= first or max(losses) >= factor * first)
        return ok, (
            f"train loss {first:.3g} at step 0, peak {max(losses):.3g}, last {losses[-1]:.3g}, "
            f"finite={finite}"
        )

    return check


def barely_moves(max_drop: float) -> Check:
    """The validation loss falls by less than max_drop (relative) from the first evaluation
    to the last (validation: the same samples each time, no batch noise)."""

    def check(run: Path) -> tuple[bool, str]:
        losses = [e["loss"] for e in read_events(run, "val")]
        drop = (losses[0] - losses[-1]) / losses[0]
        return 0 <= drop < max_drop, f"val loss fell {drop:.1%} (< {max_drop:.0%})"

    return check


def oscillates(min_swing: float = 0.2, min_reversals: int = 3) -> Check:
    """In the second half of the run the logged training loss reverses direction at least
    min_reversals times by more than min_swing of its level: it swings without settling."""

    def check(run: Path) -> tuple[bool, str]:
        losses = [e["loss"] for e in read_events(run, "train")]
        tail = losses[len(losses) // 2 :]
        level = statistics.median(tail)
        moves = [b - a for a, b in itertools.pairwise(tail) if abs(b - a) > min_swing * level]
        reversals = sum(a * b < 0 for a, b in itertools.pairwise(moves))
        ok = reversals >= min_reversals
        return ok, f"{reversals} swings > {min_swing:.0%} in the 2nd half (>= {min_reversals})"

    return check


def stalls(min_share: float = 0.4, max_change: float = 0.02, min_level: float = 0.5) -> Check:
    """For min_share of the evaluations in a row the validation loss stays within max_change
    (relative) of where that stretch began, at a level of at least min_level (nats, far above
    what the setup reaches when healthy): stuck, and not where it could be."""

    def check(run: Path) -> tuple[bool, str]:
        losses = [e["loss"] for e in read_events(run, "val")]
        best_start, best_length = 0, 0
        for start in range(len(losses)):
            end = start
            while end + 1 < len(losses):
                stretch = losses[start : end + 2]
                if max(stretch) - min(stretch) > max_change * losses[start]:
                    break
                end += 1
            if end - start + 1 > best_length:
                best_start, best_length = start, end - start + 1
        share, level = best_length / len(losses), losses[best_start]
        ok = share >= min_share and level >= min_level
        return ok, f"val loss flat at {level:.3g} for {best_length}/{len(losses)} evaluations"

    return check


def overfits(min_rise: float = 0.1, min_gap: float = 10.0) -> Check:
    """The validation loss reaches its minimum, then rises by min_rise while the training
    loss keeps falling, and ends min_gap x the training loss: the training set is memorized."""

    def check(run: Path) -> tuple[bool, str]:
        val, train = read_events(run, "val"), read_events(run, "train")
        best = min(val, key=lambda e: e["loss"])
        rise = val[-1]["loss"] / best["loss"] - 1
        train_then = [e["loss"] for e in train if e["step"] <= best["step"]][-1]
        gap = val[-1]["loss"] / train[-1]["loss"]
        ok = rise >= min_rise and train[-1]["loss"] < train_then and gap >= min_gap
        return ok, (
            f"val loss min {best['loss']:.3g} at step {best['step']}, then +{rise:.0%}; "
            f"train loss {train_then:.3g} -> {train[-1]['loss']:.2g}; val/train {gap:.0f}x"
        )

    return check


def unscaled_inputs(min_spread: float = 1e3, max_accuracy: float = 0.93) -> Check:
    """Raw features whose standard deviations differ by min_spread, fed unscaled
    (data.normalize=none), and a validation accuracy held below max_accuracy."""

    def check(run: Path) -> tuple[bool, str]:
        info = json.loads(RunFiles(run).data_info.read_text())
        low, high = raw_feature_scales(run)
        accuracy = json.loads(RunFiles(run).summary.read_text())["best_val_metric"]
        kind = info["preprocessor"]["kind"]
        ok = kind == "none" and high / low >= min_spread and accuracy < max_accuracy
        return ok, f"feature std {low:.2g}..{high:.2g} unscaled ({kind}), val acc {accuracy:.3f}"

    return check


def non_finite() -> Check:
    """A step's loss or gradient was not finite (a fault event in metrics.jsonl)."""

    def check(run: Path) -> tuple[bool, str]:
        faults = read_events(run, "fault")
        return bool(faults), f"{len(faults)} fault events"

    return check


def all_of(*checks: Check) -> Check:
    def check(run: Path) -> tuple[bool, str]:
        results = [c(run) for c in checks]
        return all(ok for ok, _ in results), "; ".join(text for _, text in results)

    return check
