"""The status file of a run (status.json): running with a heartbeat, then finished, stopped
or exited, so that `hone runs` can tell a live run from a killed one (hone.run_records.status
reads it and documents the format).

An observer, so the loop does not change: it writes "running" when training starts, a
heartbeat at most every `heartbeat_seconds` between steps, "stopped" when the loop sees a
stop signal, "finished" after the summary. A trainer that goes away otherwise (an exception
that ends it, or the process exiting) is caught by a `weakref.finalize`, which also runs at
interpreter exit: it writes "exited", with exit code 1 and the error when the process ends on
an uncaught exception that came out of the training loop (not one a notebook or pytest
recorded for something else). SIGKILL runs nothing: the file says "running" and the process
is gone, which is how a reader recognizes it.
"""

from __future__ import annotations

import signal
import sys
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hone.checkpoint.signals import EXIT_CODES
from hone.engine.observers import Observer
from hone.run_files import RunFiles
from hone.run_records import status

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer

# Keys of a train event copied into the heartbeat: the latest throughput.
_RATES = ("tokens_per_second", "samples_per_second", "mfu")


class RunStatus(Observer):
    """Keeps the run's status.json (rank 0 only, like every file of the run)."""

    def __init__(self, path: Path, heartbeat_seconds: float = status.HEARTBEAT_SECONDS) -> None:
        self.path, self.heartbeat_seconds = path, heartbeat_seconds
        # The record lives apart from the observer so that the finalizer can hold it without
        # holding the observer (which would then never be collected).
        self.record: dict[str, Any] = {}
        self._next_beat = 0.0
        self._finalizer: weakref.finalize | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        now = time.time()
        self.record.update(
            state=status.RUNNING,
            **status.this_process(),
            started=now,
            heartbeat=now,
            recipe=trainer.cfg.recipe,
            metric=trainer.task.metric,
            total_steps=trainer.total_steps,
        )
        self._beat(trainer)
        # An error raised through the owner's loop (the Trainer's, the federated server's)
        # is the run's; the modules of its class and its bases hold that loop.
        loop_files = _module_files(type(trainer))
        self._finalizer = weakref.finalize(self, _exited, self.path, self.record, loop_files)

    def on_log(self, trainer: Trainer, event: dict[str, Any]) -> None:
        split = event.get("split")
        if split == "train":
            self.record.update({k: event[k] for k in _RATES if k in event})
        elif split == "fault":
            self.record["last_fault"] = event  # rare; says why a run that then failed did

    def on_evaluation(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        self._beat(trainer)  # the best values just changed

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        # Before the checkpoint timer (observers run in order): it raises on a signal.
        if trainer.signal is not None:
            self._stopped(trainer, trainer.signal)
        elif time.monotonic() >= self._next_beat:
            self._beat(trainer)

    def on_non_finite(self, trainer: Trainer, batches: list[Any]) -> None:
        if trainer.signal is not None:
            self._stopped(trainer, trainer.signal)

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self._end(trainer, state=status.FINISHED, exit_code=0)

    def _beat(self, trainer: Trainer) -> None:
        state = trainer.state
        self.record.update(
            heartbeat=time.time(),
            step=state.step,
            train_seconds=round(state.train_seconds, 3),
            best_val=dict(state.best_val),
        )
        status.write(self.path, self.record)
        self._next_beat = time.monotonic() + self.heartbeat_seconds

    def _stopped(self, trainer: Trainer, signum: int) -> None:
        name = signal.Signals(signum)
        self._end(trainer, state=status.STOPPED, signal=name.name, exit_code=EXIT_CODES[name])

    def _end(self, trainer: Trainer, **fields: Any) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        self.record.update(ended=time.time(), **fields)
        self._beat(trainer)


def _exited(path: Path, record: dict[str, Any], loop_files: frozenset[str]) -> None:
    """The trainer went away while "running": an exception ended it, or the process exits."""
    if not path.parent.is_dir():  # the run directory was deleted (a test's temp folder)
        return
    summary = RunFiles(path.parent).summary
    if summary.is_file() and summary.stat().st_mtime >= path.stat().st_mtime:
        return  # its owner wrote a summary after the trainer stopped (a pruned trial)
    record.update(state=status.EXITED, ended=time.time())
    # Set when an uncaught exception ends the process (and by notebooks and pytest for
    # errors of their own: only one raised through the training loop is the run's).
    error = getattr(sys, "last_value", None)
    if error is not None and _raised_in(error, loop_files):
        record.update(exit_code=1, error=f"{type(error).__name__}: {error}"[:500])
    elif fault := record.get("last_fault"):  # the NaN guard gave up (`hone train` exits 3)
        record["error"] = (
            f"after non-finite steps (last: {fault.get('event')} at step {fault.get('step')})"
        )
    status.write(path, record)


def _module_files(cls: type) -> frozenset[str]:
    """The source files of the modules that define `cls` and its bases."""
    modules = (sys.modules.get(base.__module__) for base in cls.__mro__)
    return frozenset(f for m in modules if (f := getattr(m, "__file__", None)))


def _raised_in(error: BaseException, filenames: frozenset[str]) -> bool:
    """Whether `error` (or the exception it was raised from) passed through `filenames`."""
    while error is not None:
        tb = error.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename in filenames:
                return True
            tb = tb.tb_next
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return False
