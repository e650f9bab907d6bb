"""The trainer's side of checkpoints: what it saves and restores, when, and what a fault does.

`Checkpointing` is owned by a `Trainer` and called from a few places in its loop:
`prepare` (before the run's log is opened: clean up, pick the checkpoint, cut metrics.jsonl
back), `restore` (after everything is built), `step_is_finite` / `guarded_closure` (the NaN
guard of every step), `on_bad_step` (skip, and roll back after train.max_bad_steps),
`after_step` (save every train.checkpoint_every steps, on a new best, or on a signal) and
`at_end` (the final checkpoint). The files themselves are hone.checkpoint's business.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hone.checkpoint import (
    Checkpoint,
    CheckpointManager,
    FaultInjector,
    FiniteCheck,
    TrainingInterrupted,
    describe,
    grad_norm,
    poison,
    refuse_pickles,
    rng_state,
    set_rng_state,
    truncate_metrics,
)
from hone.engine.early_stopping import monitor_mode
from hone.errors import ConfigError, TrainingAborted

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer

# Schedules whose shape depends on the run's planned total steps when decay_steps = 0.
_TOTAL_STEP_SCHEDULES = {"cosine", "linear", "wsd"}


class NonFiniteStep(Exception):
    """Raised from a guarded closure before an L-BFGS/Newton step touches anything."""

    def __init__(self, loss: torch.Tensor) -> None:
        super().__init__("non-finite step")
        self.loss = loss


class Checkpointing:
    """Checkpoints, resume and numerical-fault handling of one Trainer."""

    def __init__(self, trainer: Trainer) -> None:
        t = trainer.cfg.train
        self.trainer = trainer
        strategy = getattr(trainer, "strategy", None)
        self.manager = CheckpointManager(
            trainer.run_dir / "checkpoints",
            keep_last=t.keep_last,
            keep_best=t.keep_best,
            monitor=t.monitor,
            mode=monitor_mode(t.monitor),
            is_main=trainer.dist.is_main,
            # A sharded strategy brings its own way to save model and optimizer state.
            io=getattr(strategy, "checkpoint_io", None),
            barrier=torch.distributed.barrier if strategy else (lambda: None),
        )
        self.injector = FaultInjector.from_env()
        self.step_ok = True
        self.bad_steps = 0  # consecutive non-finite steps
        self.rollbacks = 0
        self._loss = torch.zeros(())
        self._norm: torch.Tensor | None = None
        self._saved: tuple[int, int] | None = None  # (step, metrics bytes) of the last save
        self._params = list(trainer.model.parameters())  # after any wrapping or sharding
        self._finite = FiniteCheck(self._params)
        self._distributed = getattr(trainer, "strategy", None) is not None

    # ----------------------------------------------------------------- resume
    def prepare(self, resume: bool | str | Path) -> Checkpoint | None:
        """Pick the checkpoint to resume from (None: a fresh run) and cut the metrics back.

        `resume`: False for a fresh run (refused when the run directory has checkpoints),
        True for the newest valid checkpoint (one must exist), "auto" for the newest valid one
        if any, or the path of one checkpoint directory.
        """
        run_dir, manager = self.trainer.run_dir, self.manager
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
            checkpoint = self._named(Path(resume))
        if checkpoint is None:
            if resume == "auto":  # killed before its first checkpoint: start over, log afresh
                if self.trainer.dist.is_main:
                    truncate_metrics(run_dir, 0)
                return None
            raise ConfigError(
                f"{run_dir}/checkpoints holds no complete checkpoint to resume; "
                "start the run again without --resume"
            )
        manager.drop_newer_than(checkpoint.step)
        if self.trainer.dist.is_main:
            truncate_metrics(run_dir, checkpoint.manifest["metrics_bytes"])
        return checkpoint

    def _named(self, path: Path) -> Checkpoint:
        from hone.checkpoint import CorruptCheckpoint, parse_step, verify

        step = parse_step(path.name)
        if step is None or not path.is_dir():
            raise ConfigError(f"--resume {path} must be a run directory or a step-NNNNNNN folder")
        try:
            return Checkpoint(path, step, verify(path))
        except CorruptCheckpoint as e:
            raise ConfigError(f"checkpoint {path} is damaged ({e}); resume another one") from None

    def restore(self, checkpoint: Checkpoint) -> None:
        """Load the checkpoint into the trainer; the global RNGs last, after all building."""
        tr = self.trainer
        state = self.manager.load(checkpoint, tr.model, tr.optimizer)
        t, sched = tr.cfg.train, tr.cfg.schedule
        if (
            state["total_steps"] != tr.total_steps
            and sched.name in _TOTAL_STEP_SCHEDULES
            and not sched.decay_steps
        ):
            raise ConfigError(
                f"the run was planned for {state['total_steps']} steps and its "
                f"schedule.name={sched.name!r} decays over them (schedule.decay_steps=0); "
                f"changing the bounds would change its lr, got {tr.total_steps} steps now "
                f"(train.max_steps={t.max_steps}, train.max_epochs={t.max_epochs}); resume "
                "with the original bounds"
            )
        tr.state.load_state_dict(state["loop"])
        tr.schedule.load_state_dict(state["schedule"])
        tr.early_stopping.load_state_dict(state["early_stopping"])
        tr.batcher.load_state_dict(state["batcher"])
        tr.window.load_state_dict(state["window"])
        tr.stop_reason = state["stop_reason"]
        self.rollbacks = state["rollbacks"]
        scaler = getattr(tr, "scaler", None)  # a GradScaler, when the trainer has one
        if "scaler" in state and scaler is not None:
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self._saved = (checkpoint.step, checkpoint.manifest["metrics_bytes"])

    def capture(self) -> dict[str, Any]:
        """Everything besides weights and optimizer state that the next step depends on."""
        tr = self.trainer
        state: dict[str, Any] = {
            "loop": tr.state.state_dict(),
            "schedule": tr.schedule.state_dict(),
            "early_stopping": tr.early_stopping.state_dict(),
            "batcher": tr.batcher.state_dict(),
            "window": tr.window.state_dict(),
            # Bounds are re-checked on resume (they may be raised); an early stop stands.
            "stop_reason": tr.stop_reason if tr.stop_reason == "early_stopping" else "",
            "total_steps": tr.total_steps,
            "rollbacks": self.rollbacks,
            "rng": rng_state(),
        }
        scaler = getattr(tr, "scaler", None)
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        return state

    # ----------------------------------------------------------------- saving
    def _metrics_bytes(self) -> int:
        """Size of metrics.jsonl as rank 0 sees it, on every rank (so all ranks agree on
        whether a final save is due: the save is a collective under several processes)."""
        tr = self.trainer
        path = tr.run_dir / "metrics.jsonl"
        size = path.stat().st_size if tr.dist.is_main and path.exists() else 0
        if getattr(tr, "strategy", None):
            shared = torch.tensor([size], dtype=torch.int64, device=tr.device)
            torch.distributed.broadcast(shared, src=0)
            size = int(shared.item())
        return size

    def _monitor_value(self) -> float | None:
        tr = self.trainer
        last = tr.state.last_val
        if last.get("_step") != tr.state.step:
            return None
        return last.get(tr.cfg.train.monitor)

    def save(self) -> Path:
        tr = self.trainer
        step, size = tr.state.step, self._metrics_bytes()
        path = self.manager.save(
            step,
            tr.model,
            tr.optimizer,
            self.capture(),
            self._monitor_value(),
            {"metrics_bytes": size},
        )
        self._saved = (step, size)
        return path

    def after_step(self, signum: int | None) -> None:
        """After a good step (and its logging and evaluation): save when due; stop on a signal."""
        self.bad_steps = 0
        step = self.trainer.state.step
        every = self.trainer.cfg.train.checkpoint_every
        due = bool(every) and step % every == 0
        if not due and self.manager.keep_best:
            due = self.manager.is_better(self._monitor_value())
        if due or signum is not None:
            path = self.save()
            if signum is not None:
                self.trainer.log.close()
                raise TrainingInterrupted(signum, step, str(path))

    def at_end(self, signum: int | None) -> None:
        """The final checkpoint, unless the last save already holds this exact state."""
        if self.trainer.state.step and self._saved != (
            self.trainer.state.step,
            self._metrics_bytes(),
        ):
            path = str(self.save())
        else:
            path = str(self.manager.root)
        if signum is not None:
            self.trainer.log.close()
            raise TrainingInterrupted(signum, self.trainer.state.step, path)

    # ----------------------------------------------------------------- faults
    def next_faults(self) -> set[str] | None:
        """Test-only injected faults of the step about to be attempted (None: no injector)."""
        return self.injector.next_attempt() if self.injector else None

    def step_is_finite(
        self, loss: torch.Tensor, norm: torch.Tensor | None, faults: set[str] | None = None
    ) -> bool:
        """Check the step's loss and gradient norm before the optimizer steps."""
        if faults:
            loss = poison(faults, loss, self._params)
        if norm is not None and type(norm) is not torch.Tensor:  # a DTensor (sharded clipping)
            norm = norm.to_local()  # type: ignore[attr-defined]
        ok = self._finite(loss, norm)
        if not ok and norm is None:  # for the fault event, off the hot path
            norm = grad_norm(self._params)
        if self._distributed:  # every rank must skip together
            flag = torch.tensor([0.0 if ok else 1.0], device=loss.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            ok = flag.item() == 0.0
        self.step_ok, self._loss, self._norm = ok, loss, norm
        return ok

    def guarded_closure(
        self, closure: Callable[[], torch.Tensor], faults: set[str] | None
    ) -> Callable[[], torch.Tensor]:
        """A closure whose first call (before the optimizer changes anything) is checked."""
        first = True

        def guarded() -> torch.Tensor:
            nonlocal first
            loss = closure()
            if first:
                first = False
                if faults and "nan_loss" in faults:
                    loss = loss * float("nan")
                if not self.step_is_finite(loss, None, faults - {"nan_loss"} if faults else None):
                    raise NonFiniteStep(self._loss)
            return loss

        self.step_ok = True
        return guarded

    def on_bad_step(self, signum: int | None = None) -> None:
        """Log a skipped step; after train.max_bad_steps in a row, roll back; on a signal,
        save (the state is the last good step's, with the skipped batches consumed) and stop."""
        tr = self.trainer
        self.bad_steps += 1
        tr.log.log(
            {
                "step": tr.state.step + 1,
                "split": "fault",
                "event": "skipped_step",
                **describe(self._loss, self._norm),
                "consecutive": self.bad_steps,
            }
        )
        if self.bad_steps >= tr.cfg.train.max_bad_steps:
            self.rollback()
        if signum is not None:
            path = self.save()
            tr.log.close()
            raise TrainingInterrupted(signum, tr.state.step, str(path))

    def rollback(self) -> None:
        """Back to the newest valid checkpoint, skip train.rollback_skip batches, go on."""
        tr, t = self.trainer, self.trainer.cfg.train
        stuck_at = tr.state.step + 1
        if self.rollbacks >= t.max_rollbacks:
            tr.log.close()
            raise TrainingAborted(
                f"{self.bad_steps} consecutive non-finite steps at step {stuck_at} after "
                f"{self.rollbacks} rollbacks (train.max_rollbacks={t.max_rollbacks}); the run "
                "diverges: lower --optim.lr, set --train.clip_norm=1, or check the data"
            )
        checkpoint = self.manager.newest_valid()
        if checkpoint is None:
            tr.log.close()
            raise TrainingAborted(
                f"{self.bad_steps} consecutive non-finite steps at step {stuck_at} and no "
                "checkpoint to roll back to; set --train.checkpoint_every=N to roll back, "
                "lower --optim.lr, or set --train.clip_norm=1"
            )
        rollbacks = self.rollbacks + 1
        self.restore(checkpoint)
        self.rollbacks, self.bad_steps = rollbacks, 0
        if tr.dist.is_main:
            truncate_metrics(tr.run_dir, checkpoint.manifest["metrics_bytes"], keep_split="fault")
        for _ in range(t.rollback_skip):
            tr.batcher.next_step()
        tr.log.log(
            {
                "step": checkpoint.step,
                "split": "fault",
                "event": "rollback",
                "stuck_at_step": stuck_at,
                "rollback": rollbacks,
                "skipped_batches": t.rollback_skip,
            }
        )
