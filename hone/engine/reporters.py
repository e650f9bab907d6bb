"""Observers that report a run: the metrics log (metrics.jsonl, TensorBoard), progress, and
what diagnosis reads (training statistics, the NaN probe, the profiler), as the config asks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hone.engine.nan_probe import NanProbe
from hone.engine.observers import Observer
from hone.engine.profiling import Profiler
from hone.engine.stats import StatsFile, TrainingStats
from hone.track.progress import ProgressBar
from hone.track.run import RunLog

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer


class MetricsLogger(Observer):
    """Writes every logged event to the run's metrics.jsonl and TensorBoard (rank 0 only)."""

    def __init__(self, log: RunLog) -> None:
        self.log = log

    def on_log(self, trainer: Trainer, event: dict[str, Any]) -> None:
        self.log.log(event)


class ProgressObserver(Observer):
    """A rich progress bar refreshed at log steps: step, loss, validation, lr, throughput."""

    def __init__(self, mode: str, enabled: bool) -> None:
        self.mode, self.enabled = mode, enabled
        self.bar: ProgressBar | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.bar = ProgressBar(trainer.total_steps or None, self.mode, self.enabled)

    def on_log(self, trainer: Trainer, event: dict[str, Any]) -> None:
        if self.bar is None or event.get("split") != "train":
            return
        # What the event has: a federated round logs no lr and no throughput.
        text = f"loss {event['loss']:.4f}"
        last_val = trainer.state.last_val
        if "val_loss" in last_val:
            text += f" val {last_val['val_loss']:.4f}"
        if "lr" in event:
            text += f" lr {event['lr']:.3g}"
        if "tokens_per_second" in event:
            text += f" {event['tokens_per_second']:.0f} tok/s"
        elif "samples_per_second" in event:
            text += f" {event['samples_per_second']:.0f} samples/s"
        self.bar.update(event["step"], text)

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def diagnostics(trainer: Trainer) -> list[Observer]:
    """Training statistics every `log.stats_every` steps and the NaN probe with the guard
    (rank 0 only; under several processes the probe's re-run forward would be a collective).
    The status file and MLflow are every run's (hone.engine.shell)."""
    cfg = trainer.cfg
    if not trainer.dist.is_main:
        return []
    file = StatsFile(trainer.files.stats)
    observers: list[Observer] = []
    if cfg.log.stats_every:
        observers.append(TrainingStats(cfg.log.stats_every, file, trainer.log))
    if cfg.train.nan_guard and trainer.strategy is None:
        observers.append(NanProbe(file))
    return observers


def profiling(trainer: Trainer) -> list[Observer]:
    """The profiler, when `train.profile` is on."""
    return [Profiler(trainer.files, trainer.cfg.train)] if trainer.cfg.train.profile else []
