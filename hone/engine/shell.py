"""The run shell: what every run does around its loop, in one place.

Loops differ (the trainer's steps, the federated server's rounds); what surrounds them does
not, and lives here: the run's log (config.toml, metrics.jsonl, TensorBoard), the loop state
that observers read (step, train seconds, last and best validation values), the observers (a
default list that a user extends or replaces), the bookkeeping of a validation pass (best
values by `hone.metrics.is_better`), summary.json with the fields every run has, and the
status file, whose transitions the `RunStatus` observer writes at the hooks:

    running    at on_fit_start; a heartbeat at evaluations and at step (round) ends
    stopped    a stop signal seen at on_step_end (a checkpoint follows: --resume continues)
    finished   at on_fit_end, after summary.json
    failed     the owner went away unfinished (an exception): "exited", with the error
    killed     nothing is written (SIGKILL): a reader finds the process gone

The Trainer (hone.engine.trainer), so every fold of a cross-validation, and the federated
server (hone.federate.server) each hold one. The hooks receive the shell's owner, which
exposes what observers read (`RunOwner`); for a federated run a round is a step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from hone.config import Config
from hone.engine.loop_state import LoopState
from hone.engine.mlflow_mirror import mlflow_observers
from hone.engine.observers import Observer, Observers
from hone.engine.reporters import MetricsLogger, ProgressObserver
from hone.engine.run_status import RunStatus
from hone.engine.tasks import Task
from hone.errors import ConfigError
from hone.glibc_malloc import TUNABLES_VAR
from hone.metrics import is_better
from hone.run_files import RunFiles
from hone.track.run import RunLog

# What a user hands in as `observers`: more observers, appended to the defaults, or a
# function that is given the default list and returns the list to use.
ObserverChoice = Iterable[Observer] | Callable[[list[Observer]], Iterable[Observer]] | None


class RunOwner(Protocol):
    """What runs the loop (a Trainer, a FederatedRun): what observers may read of it."""

    cfg: Config
    files: RunFiles
    task: Task
    state: LoopState
    total_steps: int  # planned steps (rounds); 0 when unknown
    signal: int | None  # a stop signal received during the current step, else None


def choose_observers(defaults: list[Observer], chosen: ObserverChoice) -> list[Observer]:
    """The observers a run uses: the defaults; the defaults and `chosen` after them; or what
    `chosen(defaults)` returns (to drop, reorder or replace defaults)."""
    if chosen is None:
        return list(defaults)
    observers = list(chosen(list(defaults)) if callable(chosen) else [*defaults, *chosen])
    for observer in observers:
        if not isinstance(observer, Observer):
            raise ConfigError(
                f"observers must be hone.Observer instances, got {type(observer).__name__}; "
                "subclass hone.Observer and override the hooks you need (on_log, ...)"
            )
    return observers


class RunShell:
    """The log, observers, validation bookkeeping, summary and status of one run."""

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        is_main: bool = True,
        purge_step: int | None = None,
        state: LoopState | None = None,
    ) -> None:
        """Opens the run's log: after any resume cut metrics.jsonl back to its checkpoint
        (`purge_step`, the checkpoint's step + 1, makes TensorBoard drop the same events);
        a resumed run's config.toml is written once its checkpoint has loaded (`log.write_config`)."""
        self.cfg, self.files, self.is_main = cfg, RunFiles(run_dir), is_main
        self.state = state if state is not None else LoopState()
        self.log = RunLog(
            self.files.root, cfg, is_main, cfg.log.tensorboard, purge_step, purge_step is None
        )
        self.progress = ProgressObserver(cfg.log.progress, is_main)
        self.owner: RunOwner | None = None
        self.observers = Observers([])
        self.started = False

    # ----------------------------------------------------------------- observers
    def default_observers(self) -> list[Observer]:
        """What reports every run: the metrics log, the progress bar and, on the main process,
        the status file and the MLflow mirror (`log.mlflow`)."""
        observers: list[Observer] = [MetricsLogger(self.log), self.progress]
        if self.is_main:
            observers += [RunStatus(self.files.status), *mlflow_observers(self.cfg, self.files)]
        return observers

    def observe(
        self,
        owner: RunOwner,
        defaults: list[Observer],
        chosen: ObserverChoice = None,
        first: Iterable[Observer] = (),
        last: Iterable[Observer] = (),
    ) -> Observers:
        """Call `owner`'s hooks on `first`, the chosen observers (`choose_observers`), then
        `last`: the loop's own observers that a user's choice cannot drop."""
        self.owner = owner
        self.observers = Observers([*first, *choose_observers(defaults, chosen), *last])
        return self.observers

    def emit(self, event: dict[str, Any]) -> None:
        """Log one event: every observer's `on_log` sees it (the metrics log writes it)."""
        self.observers.call("on_log", self.owner, event)

    def start(self) -> bool:
        """`on_fit_start`, once per run (the status file says running); whether it was now."""
        if self.started:
            return False
        self.started = True
        self.observers.call("on_fit_start", self.owner)
        return True

    # ----------------------------------------------------------------- validation
    def validated(self, step: int, metrics: dict[str, float], **fields: Any) -> None:
        """A validation pass at `step` ({"val_loss": ...}; empty without a validation split):
        the last and best values, the "val" event (with `fields`), then `on_evaluation`."""
        self.state.last_val = {**metrics, "_step": step}
        if not metrics:
            return
        event = {k.removeprefix("val_"): v for k, v in metrics.items()}
        self.emit({"step": step, "split": "val", **fields, **event})
        monitor = self.cfg.train.monitor
        if monitor not in metrics:
            raise ConfigError(
                f"train.monitor = {monitor!r} is not measured for this task; "
                f"use one of: {', '.join(metrics)}"
            )
        best = self.state.best_val
        for key, value in metrics.items():
            if key not in best or is_better(key, value, best[key]):
                best[key] = value
        self.observers.call("on_evaluation", self.owner, step, metrics)

    def monitor_value(self) -> float | None:
        """The monitored metric if it was measured at this very step (for best checkpoints)."""
        last = self.state.last_val
        return last.get(self.cfg.train.monitor) if last.get("_step") == self.state.step else None

    # ----------------------------------------------------------------- the end
    def summary(
        self,
        metric: str,
        test: dict[str, float] | None = None,
        *,
        head: dict[str, Any] | None = None,
        directions: Mapping[str, str] | None = None,
        num_parameters: int | None = None,
        device: torch.device | str | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """summary.json's fields: what every run has, with the owner's own `head` (after the
        steps) and `details` (after the device). `directions`: a user's own metrics ({"f1":
        "max"}): their best values, and their directions for the readers of run files (runs,
        doctor, report), which do not import the user's code."""
        state, best, last = self.state, self.state.best_val, self.state.last_val
        directions = dict(directions or {})
        return {
            "recipe": self.cfg.recipe,
            "steps": state.step,
            **(head or {}),
            "wall_seconds": round(state.train_seconds, 3),
            "stop_reason": state.stop_reason or "bound",
            "final_val_loss": last.get("val_loss"),
            "best_val_loss": best.get("val_loss"),
            "final_val_metric": last.get(f"val_{metric}"),
            "best_val_metric": best.get(f"val_{metric}"),
            "metric": metric,
            **{f"best_val_{name}": best.get(f"val_{name}") for name in directions},
            **({"metric_directions": directions} if directions else {}),
            **(test or {}),
            "num_parameters": num_parameters,
            "device": str(device),
            **(details or {}),
            "torch_version": torch.__version__,
            "numpy_version": np.__version__,
            # the malloc settings the process started with (hone.glibc_malloc), if any
            **({"glibc_tunables": tunables} if (tunables := os.environ.get(TUNABLES_VAR)) else {}),
            "seed": self.cfg.train.seed,
            "run_dir": str(self.files.root),
        }

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json (the main process's): a reader takes the run for ended from here."""
        self.log.write_json(self.files.summary.name, summary)

    def finished(self, summary: dict[str, Any]) -> None:
        """`on_fit_end`, after every artifact is written: the status file says finished."""
        self.observers.call("on_fit_end", self.owner, summary)

    def close(self) -> None:
        """Close the progress bar and the run's files: what was logged is complete on disk.
        Safe to call more than once (after an error, then again at the end)."""
        self.progress.close()
        self.log.close()
