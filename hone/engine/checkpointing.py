"""The training side of checkpoints: what is saved and restored, when, and what a fault does.

`Checkpointing` is handed the stateful pieces of a run (`{name: object with state_dict /
load_state_dict}`: loop counters, schedule, batcher, precision, stateful observers, ...)
plus the model and optimizer, never the trainer. It is called at a few places:
`prepare` (before the run's log opens: clean up, pick the checkpoint, cut metrics.jsonl
back), `restore` (after everything is built), `after_step` (save every
train.checkpoint_every steps, on a new best, or on a signal; from the `CheckpointTimer`
observer), `on_bad_step` (skip, roll back after train.max_bad_steps) and `at_end`. The files
themselves are hone.checkpoint's business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from hone.checkpoint import (
    Checkpoint,
    CheckpointManager,
    FullStateIO,
    StateIO,
    TrainingInterrupted,
    describe,
    refuse_pickles,
    rng_state,
    set_rng_state,
    truncate_metrics,
)
from hone.config import TrainConfig, opt, register_train_part
from hone.distributed.dcp import ShardedStateIO, is_sharded
from hone.engine.guard import NanGuard
from hone.engine.observers import Observer
from hone.errors import ConfigError, TrainingAborted
from hone.metrics import direction
from hone.run_files import RunFiles

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer


@register_train_part("checkpointing")
@dataclass
class CheckpointConfig:
    """When checkpoints are written and which are kept (keys of [train])."""

    checkpoint_every: int = opt(0, "write a checkpoint every N steps (0: only at the end)", ge=0)
    keep_last: int = opt(3, "checkpoints to keep (the newest)", ge=1)
    keep_best: bool = opt(False, "also keep the best checkpoint by train.monitor")


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def resume_point(
    files: RunFiles,
    manager: CheckpointManager,
    resume: bool | str | Path,
    is_main: bool = True,
    cut_back: bool = True,
) -> Checkpoint | None:
    """The checkpoint a run resumes from (None: a fresh run); every kind of run (trainer,
    federated server) picks it so, before its log opens. With `cut_back`, the run directory
    is cut back to it at once (`cut_back_to`); the trainer passes False and cuts back once the
    checkpoint has loaded, so that a resume refused then (a changed schedule, a missing
    state) changes nothing.

    `resume`: False for a fresh run (refused when the run directory has checkpoints), True
    for the newest valid checkpoint (one must exist), "auto" for the newest valid one if any,
    or the path of one checkpoint directory.
    """
    run_dir = files.root
    manager.clean_partial()
    if resume is False:
        if manager.step_dirs():
            raise ConfigError(
                f"run directory {run_dir} already holds checkpoints; continue it with "
                f"--resume {run_dir} (or --resume auto), or set --run-dir to a new directory"
            )
        return None
    refuse_pickles(run_dir, "run directory")
    if resume is True or resume == "auto" or Path(resume) == run_dir:
        checkpoint = manager.newest_valid()
    else:
        checkpoint = _named(Path(resume))
    if checkpoint is None:
        if resume == "auto":  # killed before its first checkpoint: start over, log afresh
            if is_main:
                truncate_metrics(run_dir, 0)
            return None
        raise ConfigError(
            f"{run_dir}/checkpoints holds no complete checkpoint to resume; "
            "start the run again without --resume"
        )
    if cut_back:
        cut_back_to(files, manager, checkpoint, is_main)
    return checkpoint


def cut_back_to(
    files: RunFiles, manager: CheckpointManager, checkpoint: Checkpoint, is_main: bool = True
) -> None:
    """The run directory as it was when `checkpoint` was written: later checkpoints dropped,
    metrics.jsonl cut back (in place: an open log's appends land at the new end)."""
    manager.drop_newer_than(checkpoint.step)
    if is_main:
        truncate_metrics(files.root, checkpoint.manifest["metrics_bytes"])


def _named(path: Path) -> Checkpoint:
    from hone.checkpoint import CorruptCheckpoint, parse_step, verify

    step = parse_step(path.name)
    if step is None or not path.is_dir():
        raise ConfigError(f"--resume {path} must be a run directory or a step-NNNNNNN folder")
    try:
        return Checkpoint(path, step, verify(path))
    except CorruptCheckpoint as e:
        raise ConfigError(f"checkpoint {path} is damaged ({e}); resume another one") from None


class Checkpointing:
    """Checkpoints, resume and numerical-fault handling of one run."""

    def __init__(
        self,
        files: RunFiles,
        train: TrainConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        states: dict[str, Stateful],
        guard: NanGuard,
        emit: Callable[[dict[str, Any]], None],
        is_main: bool = True,
        io: Callable[[dict[str, Any] | None], StateIO] | None = None,
        distributed: bool = False,
        device: torch.device | None = None,
        frozen_base: dict[str, Any] | None = None,
    ) -> None:
        self.files, self.train, self.model, self.optimizer = files, train, model, optimizer
        self.states, self.guard, self.emit = states, guard, emit
        self.is_main, self.distributed = is_main, distributed
        self.device = device or torch.device("cpu")
        self.frozen_base = frozen_base
        self.manager = CheckpointManager(
            files.checkpoints,
            keep_last=train.keep_last,
            keep_best=train.keep_best,
            monitor=train.monitor,
            mode=direction(train.monitor),
            is_main=is_main,
            # a sharded strategy brings its own way to save model and optimizer state; a run
            # on a frozen base (LoRA on a checkpoint) saves the parameters that train alone
            io=io(frozen_base) if io is not None else FullStateIO(is_main, frozen_base),
            barrier=torch.distributed.barrier if distributed else (lambda: None),
        )
        self.monitor_value: Callable[[], float | None] = lambda: None
        self.close_log: Callable[[], None] = lambda: None
        self.bad_steps = 0  # consecutive non-finite steps
        self.rollbacks = 0
        self._saved: tuple[int, int] | None = None  # (step, metrics bytes) of the last save

    @property
    def step(self) -> int:
        """The loop's step: the state a save would hold."""
        return int(self.states["loop"].step)  # type: ignore[attr-defined]

    # ----------------------------------------------------------------- resume
    def prepare(self, resume: bool | str | Path) -> Checkpoint | None:
        """Pick the checkpoint to resume from (`resume_point`); `restore` cuts back to it."""
        checkpoint = resume_point(self.files, self.manager, resume, self.is_main, cut_back=False)
        if checkpoint is not None and not self.distributed and is_sharded(checkpoint.path):
            # Written by several processes (DCP shards): one process reads it just as well.
            self.manager.io = ShardedStateIO(frozen_base=self.frozen_base)
        return checkpoint

    def restore(self, checkpoint: Checkpoint, resumed: bool = False) -> None:
        """Load the checkpoint into every piece; the global RNGs last, after all building.
        `resumed`: a run resumed from it, whose directory is then cut back to it (only now,
        every piece loaded: a resume refused here leaves the run as it was)."""
        state = self.manager.load(checkpoint, self.model, self.optimizer)
        for name, piece in self.states.items():
            if name in state:
                piece.load_state_dict(state[name])
            elif piece.state_dict():  # e.g. an observer the run did not have, or an older hone
                raise ConfigError(
                    f"checkpoint {checkpoint.path} holds no {name!r} state that this run needs; "
                    "resume with the observers and hone version that wrote it, or start a new run"
                )
        self.rollbacks = state["rollbacks"]
        set_rng_state(state["rng"])
        if resumed:
            cut_back_to(self.files, self.manager, checkpoint, self.is_main)
        self._saved = (checkpoint.step, checkpoint.manifest["metrics_bytes"])

    def capture(self) -> dict[str, Any]:
        """Everything besides weights and optimizer state that the next step depends on."""
        state: dict[str, Any] = {name: piece.state_dict() for name, piece in self.states.items()}
        state["rollbacks"] = self.rollbacks
        state["rng"] = rng_state()
        return state

    # ----------------------------------------------------------------- saving
    def _metrics_bytes(self) -> int:
        """Size of metrics.jsonl as rank 0 sees it, on every rank (so all ranks agree on
        whether a final save is due: the save is a collective under several processes)."""
        path = self.files.metrics
        size = path.stat().st_size if self.is_main and path.exists() else 0
        if self.distributed:
            shared = torch.tensor([size], dtype=torch.int64, device=self.device)
            torch.distributed.broadcast(shared, src=0)
            size = int(shared.item())
        return size

    def save(self) -> Path:
        step, size = self.step, self._metrics_bytes()
        path = self.manager.save(
            step,
            self.model,
            self.optimizer,
            self.capture(),
            self.monitor_value(),
            {"metrics_bytes": size},
        )
        self._saved = (step, size)
        return path

    def _interrupt(self, signum: int, path: Path | str) -> None:
        self.close_log()
        raise TrainingInterrupted(signum, self.step, str(path))

    def after_step(self, signum: int | None) -> None:
        """After a good step (and its logging and evaluation): save when due; stop on a signal."""
        self.bad_steps = 0
        every = self.train.checkpoint_every
        due = bool(every) and self.step % every == 0
        if not due and self.manager.keep_best:
            due = self.manager.is_better(self.monitor_value())
        if due or signum is not None:
            path = self.save()
            if signum is not None:
                self._interrupt(signum, path)

    def at_end(self, signum: int | None) -> None:
        """The final checkpoint, unless the last save already holds this exact state."""
        if self.step and self._saved != (self.step, self._metrics_bytes()):
            path: Path | str = self.save()
        else:
            path = self.manager.root
        if signum is not None:
            self._interrupt(signum, path)

    # ----------------------------------------------------------------- faults
    def on_bad_step(self, signum: int | None = None) -> None:
        """Log a skipped step; after train.max_bad_steps in a row, roll back; on a signal,
        save (the state is the last good step's, with the skipped batches consumed) and stop."""
        self.bad_steps += 1
        self.emit(
            {
                "step": self.step + 1,
                "split": "fault",
                "event": "skipped_step",
                **describe(self.guard.loss, self.guard.norm),
                "consecutive": self.bad_steps,
            }
        )
        if self.bad_steps >= self.train.max_bad_steps:
            self.rollback()
        if signum is not None:
            self._interrupt(signum, self.save())

    def rollback(self) -> None:
        """Back to the newest valid checkpoint, skip train.rollback_skip batches, go on."""
        t = self.train
        stuck_at = self.step + 1
        if self.rollbacks >= t.max_rollbacks:
            self.close_log()
            raise TrainingAborted(
                f"{self.bad_steps} consecutive non-finite steps at step {stuck_at} after "
                f"{self.rollbacks} rollbacks (train.max_rollbacks={t.max_rollbacks}); the run "
                "diverges: lower --optim.lr, set --train.clip_norm=1, or check the data"
            )
        checkpoint = self.manager.newest_valid()
        if checkpoint is None:
            self.close_log()
            raise TrainingAborted(
                f"{self.bad_steps} consecutive non-finite steps at step {stuck_at} and no "
                "checkpoint to roll back to; set --train.checkpoint_every=N to roll back, "
                "lower --optim.lr, or set --train.clip_norm=1"
            )
        rollbacks = self.rollbacks + 1
        self.restore(checkpoint)
        self.rollbacks, self.bad_steps = rollbacks, 0
        if self.is_main:
            truncate_metrics(self.files.root, checkpoint.manifest["metrics_bytes"], "fault")
        batcher = self.states["batcher"]
        for _ in range(t.rollback_skip):
            batcher.next_step()  # type: ignore[attr-defined]
        self.emit(
            {
                "step": checkpoint.step,
                "split": "fault",
                "event": "rollback",
                "stuck_at_step": stuck_at,
                "rollback": rollbacks,
                "skipped_batches": t.rollback_skip,
            }
        )


class CheckpointTimer(Observer):
    """Saves when a checkpoint is due after each good step, and on a stop signal."""

    def __init__(self, checkpointing: Checkpointing) -> None:
        self.checkpointing = checkpointing

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        self.checkpointing.after_step(trainer.signal)
