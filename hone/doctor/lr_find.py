"""The learning-rate range test (Smith, 2017): train a fresh model for a few hundred steps
while the lr grows exponentially, watch the smoothed loss, and suggest an lr.

The sweep is an ordinary run of hone's trainer with one observer, `LRSweep`, that sets the
next step's lr on every parameter group (keeping their ratios: Muon's two lrs) and stops the
run when the loss diverges. Nothing else is special: the same data, model, loss, optimizer,
precision and NaN guard as `hone train` would use, with a constant schedule, no evaluation
and no checkpoints. The curve and its rules are pure (`SweepCurve`, `suggest`), and so
tested without training.

The suggestion is the lr of the lowest smoothed loss divided by 10 (rule "min/10"). The
popular alternative, the steepest descent of the loss, fails where it can be checked in
closed form. Under full-batch gradient descent on a quadratic, the loss of a geometric sweep
falls as about L0·exp(-2λ·S), S = Σ lr ≈ 11·lr (growth 1.1 per step): steepest near lr =
0.04/λ, whatever lr trains best. On `linreg` with `gd` (tests/doctor) the steepest descent
of the smoothed loss is at lr 0.042, 13x below the best fixed lr (0.56); the stable range is
lr < 2/λ_max = 0.85. The minimum, in contrast, sits just past the stability edge (2/λ_max for
gradient descent, its analogue for the others), where the loss turns up: 3.6 there, and a
tenth of it, 0.36, is stable and near the best. On stochastic problems min/10 is fastai's
long-standing rule of thumb; it errs on the safe side when the bottom of the curve is flat.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hone.config import Config, validate
from hone.engine.observers import Observer
from hone.errors import ConfigError
from hone.run_files import RunFiles

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer

RESULT_FILE = "lr_find.json"  # the sweep: lrs, losses, the suggestion and why
PLOT_FILE = "lr_find.png"  # loss against lr (log x), the suggestion marked
SWEEP_DIR = "sweep"  # the sweep's own run files (config.toml, metrics.jsonl)

RULE = "min/10"
RULE_DIVISOR = 10.0
NONFINITE_LIMIT = 2  # non-finite steps in a row that mean divergence (one may be a bad batch)


@dataclass
class SweepCurve:
    """The losses of a sweep, smoothed as they come, and when to stop.

    `smoothing` is the exponential moving average's beta (bias-corrected, so the first
    points are not pulled toward 0). The first `skip_start` points only warm the average up:
    a spike there neither counts as the best loss nor as divergence.
    """

    smoothing: float = 0.9
    stop_factor: float = 4.0
    skip_start: int = 10
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # nan where the step was not finite
    smoothed: list[float] = field(default_factory=list)  # nan where the step was not finite
    best: float = math.inf  # lowest smoothed loss after skip_start
    _average: float = 0.0
    _num_finite: int = 0
    _nonfinite_run: int = 0

    def add(self, lr: float, loss: float) -> str:
        """Record the loss of a step taken with `lr`; returns why to stop, or ''."""
        self.lrs.append(lr)
        self.losses.append(loss)
        if not math.isfinite(loss):
            self.smoothed.append(math.nan)
            self._nonfinite_run += 1
            if self._nonfinite_run >= NONFINITE_LIMIT:
                return f"the loss was not finite for {self._nonfinite_run} steps in a row at lr {lr:.3g}"
            return ""
        self._nonfinite_run = 0
        self._num_finite += 1
        beta = self.smoothing
        self._average = beta * self._average + (1 - beta) * loss
        value = self._average / (1 - beta**self._num_finite)
        self.smoothed.append(value)
        if len(self.lrs) <= self.skip_start:
            return ""
        self.best = min(self.best, value)
        if value > self.stop_factor * self.best:
            return (
                f"the smoothed loss {value:.4g} rose above {self.stop_factor:g}x its best "
                f"{self.best:.4g} at lr {lr:.3g}"
            )
        return ""


def judged_points(curve: SweepCurve) -> list[int]:
    """The points the suggestion is chosen from: finite, after the warm-up (all finite ones
    when the sweep ended while warming up)."""
    points = [i for i, s in enumerate(curve.smoothed) if math.isfinite(s)]
    return [i for i in points if i >= curve.skip_start] or points


def lowest_point(curve: SweepCurve) -> int:
    """The index of the lowest smoothed loss among the judged points."""
    points = judged_points(curve)
    if not points:
        raise ConfigError(
            f"the loss was not finite from the first step of the sweep (lr {curve.lrs[0]:.3g}); "
            "check the data, or lower --start-lr"
        )
    return min(points, key=lambda i: curve.smoothed[i])


def suggest(curve: SweepCurve, diverged: bool) -> tuple[float, str]:
    """The suggested lr (rule min/10, see the module docstring) and the reason, in words."""
    points, lowest = judged_points(curve), lowest_point(curve)
    lr_min, loss_min = curve.lrs[lowest], curve.smoothed[lowest]
    if lowest == points[0]:
        reason = (
            f"the smoothed loss never fell below its value at the start (lr {lr_min:.3g}); "
            "a guess: lower --start-lr, or check the model and data"
        )
    elif not diverged and lowest == points[-1]:
        reason = (
            f"the smoothed loss was still falling at the last lr, {lr_min:.3g}; a safe lower "
            "bound: raise --end-lr to find where it diverges"
        )
    else:
        reason = (
            f"the smoothed loss is lowest ({loss_min:.4g}) at lr {lr_min:.3g}, past which it "
            "rises; a tenth of that stays clear of the divergence"
        )
    return lr_min / RULE_DIVISOR, reason


class LRSweep(Observer):
    """Sets lr `lrs[i]` for the i-th step attempted (all parameter groups scaled alike,
    relative to optim.lr), records each step's loss in `curve`, and stops on divergence
    or after the last lr."""

    def __init__(self, lrs: list[float], curve: SweepCurve) -> None:
        self.lrs, self.curve = lrs, curve
        self.ratios: list[float] = []
        self.stop_reason = ""
        self.diverged = False

    def on_fit_start(self, trainer: Trainer) -> None:
        base = trainer.cfg.optim.lr
        self.ratios = [float(group["lr"]) / base for group in trainer.optimizer.param_groups]
        self._set_lr(trainer, self.lrs[0])

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        self._record(trainer, float(loss.item()))

    def on_non_finite(self, trainer: Trainer, batches: list[Any]) -> None:
        # The NaN guard skipped the step (no on_step_end): a point of the curve all the same.
        self._record(trainer, math.nan)

    def _record(self, trainer: Trainer, loss: float) -> None:
        index = len(self.curve.lrs)
        reason = self.curve.add(self.lrs[index], loss)
        self.diverged = self.diverged or bool(reason)
        if not reason and index + 1 == len(self.lrs):
            reason = f"the sweep reached its last lr, {self.lrs[-1]:.3g}"
        if reason:
            self.stop_reason = self.stop_reason or reason
            trainer.request_stop(reason)
        else:
            self._set_lr(trainer, self.lrs[index + 1])

    def _set_lr(self, trainer: Trainer, lr: float) -> None:
        for group, ratio in zip(trainer.optimizer.param_groups, self.ratios, strict=True):
            group["lr"] = lr * ratio


@dataclass
class LRFindResult:
    """What an lr range test found; `overrides` set the suggestion in a config."""

    recipe: str
    optimizer: str
    rule: str
    suggestion: float
    reason: str
    stop_reason: str
    diverged: bool
    overrides: dict[str, float]
    start_lr: float
    end_lr: float
    num_steps: int
    smoothing: float
    stop_factor: float
    skip_start: int  # points that only warmed the average up
    min_loss_lr: float  # where the smoothed loss was lowest; the suggestion is a tenth of it
    min_smoothed_loss: float
    lrs: list[float]
    losses: list[float | None]  # None where the step was not finite (JSON has no NaN)
    smoothed_losses: list[float | None]
    output_dir: str

    @property
    def json_path(self) -> Path:
        return Path(self.output_dir) / RESULT_FILE

    @property
    def plot_path(self) -> Path:
        return Path(self.output_dir) / PLOT_FILE


def sweep_lrs(start_lr: float, end_lr: float, num_steps: int) -> list[float]:
    """`num_steps` lrs from start_lr to end_lr, evenly spaced in log."""
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / (num_steps - 1)) for i in range(num_steps)]


def default_smoothing(num_steps: int) -> float:
    """The moving average's beta when none is given: its window, 1 / (1 - beta) steps, is 5%
    of the sweep (0.9 at 200 steps), so its lag is the same share of the lr range however
    many steps the sweep takes."""
    return max(0.0, 1.0 - 20.0 / num_steps)


def sweep_config(cfg: Config, num_steps: int) -> Config:
    """`cfg` as the sweep trains it: the lr is the sweep's alone (constant schedule, no
    warmup), no evaluation, no checkpoints, a log event every step (the progress bar shows
    the lr growing), no training statistics, and no rollback on non-finite steps (the sweep
    decides about those)."""
    sweep = copy.deepcopy(cfg)
    sweep.schedule.name, sweep.schedule.warmup_steps = "constant", 0
    t = sweep.train
    t.max_steps, t.max_epochs, t.max_seconds = num_steps, 0, 0.0
    t.eval_every = num_steps + 1
    t.patience, t.checkpoint_every, t.keep_best = 0, 0, False
    t.max_bad_steps = num_steps + 1
    t.sample_tokens = 0
    sweep.log.every, sweep.log.tensorboard = 1, False
    sweep.log.stats_every = 0  # a sweep is diagnosed by its curve, not by `hone doctor`
    validate(sweep)
    return sweep


def _check_arguments(
    start_lr: float, end_lr: float, num_steps: int, smoothing: float | None, stop_factor: float
) -> None:
    if not 0 < start_lr < end_lr:
        raise ConfigError(
            f"the sweep needs 0 < start lr < end lr, got {start_lr:g} and {end_lr:g}; "
            "set --start-lr below --end-lr (e.g. --start-lr 1e-7 --end-lr 10)"
        )
    if num_steps < 20:
        raise ConfigError(f"--num-steps must be at least 20, got {num_steps}; e.g. --num-steps 200")
    if smoothing is not None and not 0 <= smoothing < 1:
        raise ConfigError(f"--smoothing must be in [0, 1), got {smoothing:g}; e.g. 0.9")
    if not 1 < stop_factor < math.inf:
        raise ConfigError(f"--stop-factor must be above 1 and finite, got {stop_factor:g}; e.g. 4")


def lr_find(
    cfg: Config,
    output_dir: str | Path,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 200,
    smoothing: float | None = None,
    stop_factor: float = 4.0,
) -> LRFindResult:
    """Run the lr range test of `cfg` from a fresh model; write lr_find.json and
    lr_find.png into `output_dir` (the sweep's run files into its sweep/ folder)."""
    from hone.engine.trainer import Trainer

    _check_arguments(start_lr, end_lr, num_steps, smoothing, stop_factor)
    output = Path(output_dir)
    lrs = sweep_lrs(start_lr, end_lr, num_steps)
    # Warm-up of the average: 5% of the sweep, at least 3 points.
    beta = default_smoothing(num_steps) if smoothing is None else smoothing
    curve = SweepCurve(beta, stop_factor, skip_start=max(3, num_steps // 20))
    sweep = LRSweep(lrs, curve)
    # A run log appends: a sweep repeated into the same folder starts its metrics afresh.
    RunFiles(output / SWEEP_DIR).metrics.unlink(missing_ok=True)
    trainer = Trainer(
        config=sweep_config(cfg, num_steps), run_dir=output / SWEEP_DIR, observers=[sweep]
    )
    try:
        trainer.run()
    finally:
        trainer.close()
    suggestion, reason = suggest(curve, sweep.diverged)
    lowest = lowest_point(curve)
    result = LRFindResult(
        recipe=cfg.recipe,
        optimizer=cfg.optim.name,
        rule=RULE,
        suggestion=suggestion,
        reason=reason,
        stop_reason=sweep.stop_reason or trainer.stop_reason,
        diverged=sweep.diverged,
        overrides=lr_overrides(cfg, suggestion),
        start_lr=start_lr,
        end_lr=end_lr,
        num_steps=num_steps,
        smoothing=beta,
        stop_factor=stop_factor,
        skip_start=curve.skip_start,
        min_loss_lr=curve.lrs[lowest],
        min_smoothed_loss=curve.smoothed[lowest],
        lrs=curve.lrs,
        losses=[v if math.isfinite(v) else None for v in curve.losses],
        smoothed_losses=[v if math.isfinite(v) else None for v in curve.smoothed],
        output_dir=str(output),
    )
    output.mkdir(parents=True, exist_ok=True)
    result.json_path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    plot(result)
    return result


def lr_overrides(cfg: Config, lr: float) -> dict[str, float]:
    """The config values that set the swept lr: optim.lr, and Muon's own lr scaled alike."""
    overrides = {"optim.lr": float(f"{lr:.3g}")}
    if cfg.optim.name == "muon":
        overrides["optim.muon_lr"] = float(f"{cfg.optim.muon_lr * lr / cfg.optim.lr:.3g}")
    return overrides


def plot(result: LRFindResult) -> Path:
    """Loss (raw and smoothed) against lr on a log axis, the suggestion marked; as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    def finite(values: list[float | None]) -> tuple[list[float], list[float]]:
        pairs = [(lr, v) for lr, v in zip(result.lrs, values, strict=True) if v is not None]
        return [lr for lr, _ in pairs], [v for _, v in pairs]

    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(*finite(result.losses), color="0.75", linewidth=1, label="loss")
    axes.plot(*finite(result.smoothed_losses), color="C0", linewidth=2, label="smoothed loss")
    axes.axvline(
        result.suggestion, color="C3", linestyle="--", label=f"suggestion {result.suggestion:.3g}"
    )
    axes.plot(
        result.min_loss_lr, result.min_smoothed_loss, "o", color="C1", label="lowest smoothed loss"
    )
    # The y range up to the minimum only: the diverging tail leaves the top of the plot
    # instead of squashing the part that matters.
    lowest = result.lrs.index(result.min_loss_lr)
    window = slice(min(result.skip_start, lowest), lowest + 1)
    before = [v for v in result.smoothed_losses[window] + result.losses[window] if v is not None]
    low, high = min(before), max(v for v in result.smoothed_losses[window] if v is not None)
    margin = 0.1 * (high - low) or 0.1 * abs(high) or 1.0
    axes.set_ylim(low - margin, high + margin)
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title(f"lr range test: {result.recipe or 'config'} ({result.optimizer})")
    axes.legend()
    figure.tight_layout()
    figure.savefig(result.plot_path, dpi=100)
    plt.close(figure)
    return result.plot_path
