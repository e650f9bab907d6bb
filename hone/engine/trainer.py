"""The training loop: step, log, evaluate, stop; in rounds (`run(until=...)`) or to the end
(`fit()`).

The trainer takes its parts ready or builds them from the config (hone.engine.parts); each
step is the `Stepper`'s (hone.engine.step); everything that watches or steers the loop is an
observer (hone.engine.observers): the metrics log, the progress bar, early stopping,
checkpoint timing, the tuner's pruning, a user's own. Checkpointing is handed the stateful
pieces, not the trainer. Everything that needs the host (logging, progress, time checks)
happens every `log.every` steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hone.checkpoint import StopSignals
from hone.config import Config
from hone.data.base import Data
from hone.distributed.context import DistContext
from hone.distributed.dcp import ShardedStateIO, is_sharded
from hone.distributed.strategy import build_strategy
from hone.engine.bounds import BOUND_REASONS, Plan, bound_reached, planned_steps
from hone.engine.checkpointing import Checkpointing, CheckpointTimer
from hone.engine.early_stopping import EarlyStopping
from hone.engine.loop_state import LogWindow, LoopState
from hone.engine.observers import Observer, Observers
from hone.engine.parts import build_batcher, build_parts, context_length, data_info
from hone.engine.precision import Precision
from hone.engine.reporters import MetricsLogger, ProgressObserver, diagnostics, profiling
from hone.engine.runtime import enable_fast_matmul, resolve_device, seed_everything
from hone.engine.step import Stepper
from hone.engine.tasks import evaluate
from hone.engine.threads import thread_observers
from hone.errors import ConfigError
from hone.metrics import is_better
from hone.models import num_parameters
from hone.models.converters import ModelConverter
from hone.optim import build_optimizer, build_schedule, optimizer_kind
from hone.run_files import RunFiles
from hone.track.run import RunLog
from hone.track.throughput import ThroughputMeter


class Trainer:
    """Trains a model on a `Config`'s data; `fit()` returns the run's summary."""

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        dist: DistContext | None = None,
        data: Data | None = None,
        model: nn.Module | None = None,
        loss: Callable[..., torch.Tensor] | None = None,
        teacher: nn.Module | None = None,
        converters: Iterable[ModelConverter] = (),
        observers: Iterable[Observer] = (),
        resume: bool | str | Path = False,
    ) -> None:
        """Parts not handed in are built from `cfg`; the global RNGs are seeded only when the
        trainer builds the model itself. `resume`: False starts afresh; True continues from
        the newest valid checkpoint in run_dir; "auto" does so when there is one; a path
        names one checkpoint directory."""
        t = cfg.train
        self.cfg, self.run_dir, self.files = cfg, Path(run_dir), RunFiles(run_dir)
        self.dist = dist or DistContext.from_env()
        if model is None:
            seed_everything(t.seed, t.deterministic)
        self.device = resolve_device(t.device, self.dist.local_rank)
        # None in a single process; else the process group is joined here (hone.distributed).
        self.strategy = build_strategy(cfg, self.dist, self.device)
        enable_fast_matmul(self.device)
        self.precision = Precision.from_config(t.precision, self.device)
        parts = build_parts(cfg, self.device, data, model, loss, teacher, converters)
        self.data, self.task, self.spec = parts.data, parts.task, parts.spec
        self.model, self.loss_fn, self.converters = parts.model, parts.loss_fn, parts.converters
        self.eval_loss_fn = parts.eval_loss_fn
        self.num_parameters = num_parameters(self.model)
        # The module called in training steps (DDP wraps, FSDP shards in place); before the
        # optimizer, which must see FSDP's sharded parameters.
        self.train_module = self.strategy.wrap(self.model) if self.strategy else self.model
        kind = optimizer_kind(cfg.optim.name)
        self.optimizer = build_optimizer(cfg.optim, self.model, self.device)
        self.batcher = build_batcher(cfg, self.data, self.spec, kind, self.dist)
        self.total_steps = planned_steps(cfg, self.batcher.steps_per_epoch)
        self.schedule = build_schedule(cfg.schedule, self.optimizer, self.total_steps)
        forward = torch.compile(self.train_module) if t.compile else self.train_module
        self.stepper = Stepper(
            cfg, self.model, forward, self.train_module, self.loss_fn, self.optimizer,
            self.schedule, kind, self.precision, self.strategy, self.device, parts.teacher,
        )  # fmt: skip
        self.state = LoopState()
        self.window = LogWindow(torch.zeros((), device=self.device))
        self.early_stopping = EarlyStopping(t.monitor, t.patience, t.min_delta)
        self.progress = ProgressObserver(cfg.log.progress, self.dist.is_main)
        self.signal: int | None = None  # a SIGTERM/SIGINT received during the current run
        self.checkpointing = Checkpointing(
            self.files, t, self.model, self.optimizer, {}, self.stepper.guard, self.emit,
            self.dist.is_main, getattr(self.strategy, "checkpoint_io", None),
            self.strategy is not None, self.device,
        )  # fmt: skip
        # Before the log opens metrics.jsonl: resuming cuts it back to the checkpoint.
        resume_from = self.checkpointing.prepare(resume)
        if resume_from is not None and not self.strategy and is_sharded(resume_from.path):
            # Written by several processes (DCP shards): one process reads it just as well.
            self.checkpointing.manager.io = ShardedStateIO()
        # TensorBoard drops the events a killed run logged after its checkpoint, as metrics.jsonl does.
        purge_step = resume_from.step + 1 if resume_from is not None else None
        self.log = RunLog(self.run_dir, cfg, self.dist.is_main, cfg.log.tensorboard, purge_step)
        if self.converters:
            self.log.write_json(self.files.converters.name, {"converters": self.converters})
        self.observers = Observers(
            [
                *thread_observers(self),
                MetricsLogger(self.log),
                self.progress,
                self.early_stopping,
                *diagnostics(self),
                *observers,
                # Last: a checkpoint holds every observer's state after the step.
                CheckpointTimer(self.checkpointing),
                *profiling(self),
            ]
        )
        self.stepper.after_backward, self.stepper.owner = self.observers.after_backward, self
        self.checkpointing.states = self.stateful()
        self.checkpointing.monitor_value = self._monitor_value
        self.checkpointing.close_log = self.log.close
        self.throughput = ThroughputMeter.for_model(
            self.model, self.device, self.precision.name, t.peak_flops, self.dist.world_size
        )
        self._agreed_seconds = 0.0  # train_seconds averaged over ranks at the last log step
        self._started = False
        if resume_from is not None:  # last: everything it restores must be built
            self.checkpointing.restore(resume_from)

    def stateful(self) -> dict[str, Any]:
        """Every piece a checkpoint holds besides model and optimizer, by name."""
        return {
            "loop": self.state,
            "plan": Plan(self.cfg, self.total_steps),
            "schedule": self.schedule,
            "batcher": self.batcher,
            "window": self.window,
            "precision": self.precision,
            **self.observers.stateful(),
        }

    # ----------------------------------------------------------------- control
    @property
    def stop_reason(self) -> str:
        return self.state.stop_reason

    def request_stop(self, reason: str) -> None:
        """End the run after the current step (observers call this: early stopping, ...)."""
        self.state.stop_reason = self.state.stop_reason or reason

    def emit(self, event: dict[str, Any]) -> None:
        """Log one event: every observer's `on_log` sees it (the metrics log writes it)."""
        self.observers.call("on_log", self, event)

    def _should_stop(self, until: int | None) -> bool:
        if self.state.stop_reason:
            return True
        reason = bound_reached(self.cfg, self.state.step, self.batcher.epochs_done, until)
        # The clock is read on log steps only; max_seconds is honoured to within log.every steps.
        # Across processes only the clock agreed on at log steps counts: all ranks stop together.
        seconds = self._agreed_seconds if self.strategy else self.state.train_seconds
        if not reason and self.cfg.train.max_seconds and seconds >= self.cfg.train.max_seconds:
            reason = "max_seconds"
        self.state.stop_reason = reason
        return bool(reason)

    # ----------------------------------------------------------------- the loop
    def run(self, until: int | None = None) -> str:
        """Train until step `until` (None: the config's bounds), a stop request or a signal;
        returns why it stopped. May be called again to continue (training in rounds)."""
        try:
            with StopSignals() as signals:
                return self._loop(until, signals)
        except BaseException:
            self._close_files()  # what was logged is complete on disk
            raise

    def fit(self) -> dict[str, Any]:
        """Train until a bound, early stopping or an external stop; evaluate, save, close."""
        try:
            # SIGTERM/SIGINT only set a flag; the step ends, a checkpoint is written, and the
            # checkpoint timer raises TrainingInterrupted.
            with StopSignals() as signals:
                self._loop(None, signals)
                if self.state.step and self.state.last_val.get("_step") != self.state.step:
                    self.evaluate()
                self.checkpointing.at_end(signals.received)
            summary = self.finish()
        except BaseException:
            # An observer (the tuner's pruning) or an error ended the run: close its files so
            # that what was logged is complete on disk; other ranks may still be in the group.
            self._close_files()
            raise
        self.close()
        return summary

    def _loop(self, until: int | None, signals: StopSignals) -> str:
        if self.state.stop_reason in BOUND_REASONS:  # a bound of the last round; re-checked
            self.state.stop_reason = ""
        if not self._started:
            self._started = True
            self.model.train()
            self.observers.call("on_fit_start", self)
        state, window, stepper = self.state, self.window, self.stepper
        step_start, step_end = self.observers.step_start, self.observers.step_end
        log_every = self.cfg.log.every
        window_start = time.perf_counter()
        window_steps, window_clock = 0, state.train_seconds  # steps timed here; clock at the start
        while not self._should_stop(until):
            batches = self.batcher.next_step()
            for observer in step_start:
                observer.on_step_start(self, batches)
            loss = stepper.step(batches)
            self.signal = signals.received
            if not stepper.ok:  # non-finite: nothing was stepped
                self.observers.call("on_non_finite", self, batches)
                self.checkpointing.on_bad_step(self.signal)
                continue
            state.step += 1
            window.loss_sum += loss
            window.count += 1
            window_steps += 1
            if state.step % log_every == 0 or self._bound(until):
                state.train_seconds += time.perf_counter() - window_start
                self._log_train(window_steps, state.train_seconds - window_clock)
                window.loss_sum.zero_()
                window.count = window_steps = 0
                window_start, window_clock = time.perf_counter(), state.train_seconds
            if self._eval_due(state.step):
                state.train_seconds += time.perf_counter() - window_start
                self.evaluate()
                window_start = time.perf_counter()
            for observer in step_end:
                observer.on_step_end(self, loss)
        state.train_seconds += time.perf_counter() - window_start
        return state.stop_reason

    def _bound(self, until: int | None) -> bool:
        return bool(bound_reached(self.cfg, self.state.step, self.batcher.epochs_done, until))

    def _eval_due(self, step: int) -> bool:
        if every := self.cfg.train.eval_every:
            return step % every == 0
        return step % self.batcher.steps_per_epoch == 0 and self.task.name != "lm"

    def _log_train(self, steps: int, seconds: float) -> None:
        loss_sum = self.window.loss_sum
        if self.strategy:  # the mean over the global batch, and one clock for every rank
            loss_sum, self._agreed_seconds = self.strategy.agree(loss_sum, self.state.train_seconds)
        samples = steps * self.cfg.train.batch_size
        event: dict[str, Any] = {
            "step": self.state.step,
            "split": "train",
            "epoch": round(self.batcher.epochs_done, 4),
            "loss": (loss_sum / self.window.count).item(),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "elapsed": round(self.state.train_seconds, 4),
            "samples_per_second": samples / seconds if seconds > 0 else 0.0,
        }
        if self.task.name == "lm":
            tokens = samples * context_length(self.spec)
            event.update(self.throughput.rates(tokens / seconds if seconds > 0 else 0.0))
        self.state.samples_seen += samples
        self.emit(event)

    # ----------------------------------------------------------------- evaluation
    def evaluate_split(self, split: str) -> dict[str, float]:
        """Loss and metric of `split` ('val' or 'test'), keys prefixed by the split."""
        if not self.task.has_split(self.data, split):
            return {}
        t, d = self.cfg.train, self.dist
        batches = self.task.eval_batches(
            self.data, split, t.eval_batch_size if self.task.name != "lm" else t.batch_size,
            context_length(self.spec), t.eval_batches, d.rank, d.world_size, t.grad_accum,
        )  # fmt: skip
        result = evaluate(
            self.model, batches, self.eval_loss_fn, self.task, self.device, self.precision.autocast
        )
        if self.strategy and self.task.name == "lm":  # equal shares of the windows: mean of means
            loss = self.strategy.mean_over_ranks(result["loss"])
            result = {"loss": loss, self.task.metric: self.task.finish(None, 1, loss)}
        elif self.strategy:  # every rank evaluated everything; rank 0's numbers decide for all
            result = self.strategy.broadcast_metrics(result)
        return {f"{split}_{k}": v for k, v in result.items()}

    def evaluate(self) -> dict[str, float]:
        """Evaluate on validation, log it, keep the best values, tell the observers."""
        step = self.state.step
        metrics = self.evaluate_split("val")
        self.state.last_val = {**metrics, "_step": step}
        if not metrics:
            return metrics
        epoch = round(self.batcher.epochs_done, 4)
        self.emit(
            {"step": step, "split": "val", "epoch": epoch, **{k[4:]: v for k, v in metrics.items()}}
        )
        monitor = self.cfg.train.monitor
        if monitor not in metrics:
            raise ConfigError(
                f"train.monitor = {monitor!r} is not measured for this task; use one of: {', '.join(metrics)}"
            )
        best = self.state.best_val
        for key, value in metrics.items():
            if key not in best or is_better(key, value, best[key]):
                best[key] = value
        if self.task.name == "lm" and self.cfg.train.sample_tokens:
            self.log.text("sample", self.sample(min(64, self.cfg.train.sample_tokens)), step)
        self.observers.call("on_evaluation", self, step, metrics)
        return metrics

    def _monitor_value(self) -> float | None:
        """The monitored metric if it was measured at this very step (for best checkpoints)."""
        last = self.state.last_val
        return last.get(self.cfg.train.monitor) if last.get("_step") == self.state.step else None

    def sample(self, num_tokens: int, prompt: str = "\n", seed: int = 0) -> str:
        """A short sample from the language model (temperature 1, top-k 50), as `hone sample`
        draws it."""
        from hone.engine.inference import LoadedRun

        run = LoadedRun.from_trainer(self)
        assert run.tokenizer is not None
        if not run.tokenizer.encode(prompt):  # a corpus without that character
            prompt = run.tokenizer.decode([0])
        return run.sample(prompt, num_tokens, 1.0, 50, seed)

    # ----------------------------------------------------------------- the end
    def finish(self) -> dict[str, Any]:
        """Test metrics, final weights, data.json, summary.json; returns the summary."""
        test = self.evaluate_split("test")
        if test:
            self.emit(
                {"step": self.state.step, "split": "test", **{k[5:]: v for k, v in test.items()}}
            )
        if self.strategy:  # every rank takes part (FSDP gathers shards); rank 0 writes one file
            self.strategy.save_model(self.model, self.files.model)
        elif self.dist.is_main:
            from safetensors.torch import save_model

            save_model(self.model, str(self.files.model))
        if self.dist.is_main:
            if self.task.name == "lm":
                self.data.tokenizer.save(str(self.files.tokenizer))  # type: ignore[union-attr]
            self.log.write_json(self.files.data_info.name, data_info(self.data, self.spec))
        summary = self.summary(test)
        self.log.write_json(self.files.summary.name, summary)
        # Every rank samples (under FSDP each forward is a collective); only rank 0 logs it.
        if self.task.name == "lm" and self.cfg.train.sample_tokens:
            summary["sample"] = self.sample(self.cfg.train.sample_tokens)
            self.emit({"step": self.state.step, "split": "sample", "text": summary["sample"]})
        self.observers.call("on_fit_end", self, summary)
        return summary

    def _close_files(self) -> None:
        self.progress.close()
        self.log.close()

    def close(self) -> None:
        """Close the run's files and the progress bar, and leave the process group."""
        self._close_files()
        if self.strategy:
            self.strategy.close()
            self.strategy = None

    def summary(self, test: dict[str, float] | None = None) -> dict[str, Any]:
        best, last, metric = self.state.best_val, self.state.last_val, self.task.metric
        return {
            "recipe": self.cfg.recipe,
            "steps": self.state.step,
            "epochs": round(self.batcher.epochs_done, 4),
            "wall_seconds": round(self.state.train_seconds, 3),
            "stop_reason": self.state.stop_reason or "bound",
            "final_val_loss": last.get("val_loss"),
            "best_val_loss": best.get("val_loss"),
            "best_val_metric": best.get(f"val_{metric}"),
            "metric": metric,
            **(test or {}),
            "num_parameters": self.num_parameters,
            "device": str(self.device),
            **(self.precision.summary() | self.throughput.summary()),  # what ran, and why
            "torch_version": torch.__version__,
            "numpy_version": np.__version__,
            "seed": self.cfg.train.seed,
            "run_dir": str(self.run_dir),
        }
