"""The training loop: step, log, evaluate, stop; in rounds (`run(until)`) or to the end (`fit()`).

The trainer takes its parts ready or builds them from the config (hone.engine.parts); each
step is the `Stepper`'s (hone.engine.step); everything that watches or steers the loop is an
observer (hone.engine.observers): the metrics log, the progress bar, early stopping,
checkpoint timing, the tuner's pruning, a user's own. Checkpointing is handed the stateful
pieces, not the trainer. Everything that needs the host (logging, progress, time checks)
happens every `log.every` steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hone.checkpoint import StopSignals, frozen_base, save_weights
from hone.data.base import Data
from hone.data.loaders import LoaderData
from hone.distributed.context import DistContext
from hone.distributed.strategy import build_strategy
from hone.engine.allocator import freed_memory_kept
from hone.engine.bounds import BOUND_REASONS, Plan, bound_reached, planned_steps
from hone.engine.checkpointing import Checkpointing, CheckpointTimer
from hone.engine.early_stopping import EarlyStopping
from hone.engine.inputs import ConfigSource, resolve_inputs
from hone.engine.loop_state import LogWindow, LoopState
from hone.engine.parts import (
    build_batcher,
    build_parts,
    build_user_optimizer,
    recorded_model_config,
    run_name,
)
from hone.engine.precision import Precision
from hone.engine.reporters import diagnostics, profiling
from hone.engine.runtime import enable_fast_matmul, resolve_device, seed_everything
from hone.engine.shell import ObserverChoice, RunShell
from hone.engine.step import Stepper
from hone.engine.tasks import Task, evaluate
from hone.engine.threads import thread_count
from hone.models import num_parameters
from hone.models.converters import ModelConverter
from hone.optim import build_schedule
from hone.run_files import RunFiles, default_run_dir
from hone.track.throughput import ThroughputMeter


class Trainer:
    """Trains a model and writes a run; `fit()` returns the run's summary.

    Everything not handed in is built from the config, so `hone train` is this constructor
    with a config alone. From Python (README, "From Python"; docs/python.md):

        summary = hone.Trainer(MyNet(), train_loader, val_loader, config="mlp-digits",
                               overrides=["train.max_epochs=5"]).fit()

    `train_data`/`val_data`/`test_data`: see hone.data.loaders; `config`: a recipe, a TOML
    path, a `Config` or a dict; `optimizer`: an instance or a `params -> Optimizer` factory;
    `loss`: a function or a name; `task`: a name or a `Task`; `metrics`: `{name: Metric}` or
    `{name: (fn, "max")}`; `observers`: added to the defaults, or a function of them; `resume`:
    False, True (newest valid checkpoint in run_dir), "auto" (that if any) or a checkpoint.
    The engine's callers also pass `dist`, `data` (a ready `Data`), `teacher`, `converters`
    and `keep_model_config` (the model is the config's, changed: do not record it).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        train_data: Any = None,
        val_data: Any = None,
        test_data: Any = None,
        *,
        config: ConfigSource = None,
        overrides: Sequence[str] = (),
        optimizer: torch.optim.Optimizer | Callable[..., torch.optim.Optimizer] | None = None,
        loss: Callable[..., torch.Tensor] | str | None = None,
        task: str | Task | None = None,
        metrics: Mapping[str, Any] | None = None,
        observers: ObserverChoice = None,
        run_dir: str | Path | None = None,
        resume: bool | str | Path = False,
        dist: DistContext | None = None,
        data: Data | LoaderData | None = None,
        teacher: nn.Module | None = None,
        converters: Iterable[ModelConverter] = (),
        keep_model_config: bool = False,
    ) -> None:
        # Everything is checked before anything is written: the config, the parts, the data.
        given = resolve_inputs(
            config, overrides, model, (train_data, val_data, test_data), loss, task, metrics, data
        )
        cfg, data, loss, self.user_metrics = given.cfg, given.data, given.loss, given.metrics
        t = cfg.train
        self.cfg, self.dist = cfg, dist or DistContext.from_env()
        if model is None:
            seed_everything(t.seed, t.deterministic)
        self.device = resolve_device(t.device, self.dist.local_rank)
        parts = build_parts(cfg, self.device, data, model, loss, teacher, converters, given.task)
        self.data, self.task, self.spec = parts.data, parts.task, parts.spec
        if model is not None and not keep_model_config and not converters:
            cfg.model = recorded_model_config(cfg, model, self.spec)
        self.run_dir = Path(run_dir or default_run_dir(run_name(cfg, model)))
        self.files = RunFiles(self.run_dir)
        # None in a single process; else the process group is joined here (hone.distributed).
        self.strategy = build_strategy(cfg, self.dist, self.device)
        enable_fast_matmul(self.device)
        self.precision = Precision.from_config(t.precision, self.device)
        self.model, self.loss_fn, self.converters = parts.model, parts.loss_fn, parts.converters
        self.eval_loss_fn = parts.eval_loss_fn
        self.num_parameters = num_parameters(self.model)
        # The module training steps call (DDP wraps, FSDP shards in place): before the optimizer.
        self.train_module = self.strategy.wrap(self.model) if self.strategy else self.model
        self.optimizer, kind = build_user_optimizer(optimizer, cfg, self.model, self.device)
        self.batcher = build_batcher(cfg, self.data, self.spec, kind, self.dist, self.device)
        self.total_steps = planned_steps(cfg, self.batcher.steps_per_epoch)
        self.schedule = build_schedule(cfg.schedule, self.optimizer, self.total_steps)
        forward = torch.compile(self.train_module) if t.compile else self.train_module
        self.stepper = Stepper(
            cfg, self.model, forward, self.train_module, self.loss_fn, self.optimizer,
            self.schedule, kind, self.precision, self.strategy, self.device, parts.teacher,
            parts.post_step, parts.model_loss, self.task.accumulation_weights,
        )  # fmt: skip
        self.state = LoopState()
        self.window = LogWindow(torch.zeros((), device=self.device))
        self.early_stopping = EarlyStopping(t.monitor, t.patience, t.min_delta)
        self.signal: int | None = None  # a SIGTERM/SIGINT received during the current run
        self.checkpointing = Checkpointing(
            self.files, t, self.model, self.optimizer, {}, self.stepper.guard, self.emit,
            self.dist.is_main, self.strategy.checkpoint_io if self.strategy else None,
            self.strategy is not None, self.device, frozen_base(self.converters),
        )  # fmt: skip
        resume_from = self.checkpointing.prepare(resume)
        # TensorBoard drops the events a killed run logged after its checkpoint, as metrics.jsonl does.
        purge_step = resume_from.step + 1 if resume_from is not None else None
        # The run's log, observers, validation bookkeeping, summary and status (hone.engine.shell).
        self.shell = RunShell(cfg, self.run_dir, self.dist.is_main, purge_step, self.state)
        self.log, self.progress = self.shell.log, self.shell.progress
        if self.converters:
            self.log.write_json(self.files.converters.name, {"converters": self.converters})
        # torch's thread count: set while a round trains, the caller's given back after it.
        self.threads = thread_count(self)
        defaults = [
            self.threads,
            *self.shell.default_observers(),  # metrics log, progress, status.json, MLflow
            self.early_stopping,
            *diagnostics(self),
        ]
        # Last: a checkpoint holds every observer's state after the step.
        last = [CheckpointTimer(self.checkpointing), *profiling(self)]
        self.observers = self.shell.observe(self, defaults, observers, last=last)
        self.stepper.after_backward, self.stepper.owner = self.observers.after_backward, self
        self.checkpointing.states = self.stateful()
        self.checkpointing.monitor_value = self.shell.monitor_value
        self.checkpointing.close_log = self.log.close
        self.throughput = ThroughputMeter.for_model(
            self.model, self.device, self.precision.name, t.peak_flops, self.dist.world_size,
            self.task.context_length(self.spec),
        )  # fmt: skip
        self._agreed_seconds = 0.0  # train_seconds averaged over ranks at the last log step
        self._mark = self._token_mark = 0  # a loader's samples, real tokens: at the last log
        if resume_from is not None:  # last: everything it restores must be built; the run's
            self.checkpointing.restore(resume_from, resumed=True)  # files change only now
            self.log.write_config(cfg)

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
            with self.threads, freed_memory_kept(), StopSignals() as signals:
                return self._loop(until, signals)
        except BaseException:
            self._close_files()  # what was logged is complete on disk
            raise

    def fit(self) -> dict[str, Any]:
        """Train until a bound, early stopping or an external stop; evaluate, save, close."""
        try:
            # SIGTERM/SIGINT only set a flag; the step ends, a checkpoint is written, and the
            # checkpoint timer raises TrainingInterrupted.
            with self.threads, freed_memory_kept():
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
        if not self.shell.started:
            self.model.train()
            self.shell.start()  # on_fit_start
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
        per_epoch = self.batcher.steps_per_epoch  # 0: a loader of unknown length
        return self.task.evaluates_each_epoch and bool(per_epoch) and step % per_epoch == 0

    def _log_train(self, steps: int, seconds: float) -> None:
        loss_sum = self.window.loss_sum
        if self.strategy:  # the mean over the global batch, and one clock for every rank
            loss_sum, self._agreed_seconds = self.strategy.agree(loss_sum, self.state.train_seconds)
        # A user's loader sets its own batch size: its batches are counted as they are drawn.
        counted = getattr(self.batcher, "samples", None)
        samples = steps * self.cfg.train.batch_size if counted is None else counted - self._mark
        self._mark = counted or 0
        event: dict[str, Any] = {
            "step": self.state.step,
            "split": "train",
            "epoch": round(self.batcher.epochs_done, 4),
            "loss": (loss_sum / self.window.count).item(),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "elapsed": round(self.state.train_seconds, 4),
            "samples_per_second": samples / seconds if seconds > 0 else 0.0,
        }
        if tokens_per_sample := self.task.tokens_per_sample(self.spec):
            drawn = getattr(self.batcher, "real_tokens", None)  # examples: without padding
            tokens = samples * tokens_per_sample if drawn is None else drawn - self._token_mark
            self._token_mark = drawn or 0
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
            self.data, split, self.task.eval_batch_size(t),
            self.task.context_length(self.spec), t.eval_batches, d.rank, d.world_size, t.grad_accum,
        )  # fmt: skip
        result = evaluate(
            self.model, batches, self.eval_loss_fn, self.task, self.device,
            self.precision.autocast, self.user_metrics, self.stepper.model_loss,
        )  # fmt: skip
        if self.strategy:
            result = self.task.reduce_over_ranks(result, self.strategy)
        return {f"{split}_{k}": v for k, v in result.items()}

    def evaluate(self) -> dict[str, float]:
        """Evaluate on validation, log it, keep the best values, tell the observers."""
        step = self.state.step
        metrics = self.evaluate_split("val")
        if metrics and self._samples_text:
            self.log.text("sample", self.sample(min(64, self.cfg.train.sample_tokens)), step)
        # Last and best values, the "val" event, then every observer's on_evaluation.
        self.shell.validated(step, metrics, epoch=round(self.batcher.epochs_done, 4))
        return metrics

    @property
    def _samples_text(self) -> bool:  # a text model with a tokenizer to decode samples
        has_tokenizer = getattr(self.data, "tokenizer", None) is not None
        return self.task.generates_text and bool(self.cfg.train.sample_tokens) and has_tokenizer

    def sample(self, num_tokens: int, prompt: str = "\n", seed: int = 0) -> str:
        """A short sample from the language model, as `hone sample` draws it."""
        from hone.engine.inference import LoadedRun

        return LoadedRun.from_trainer(self).training_sample(num_tokens, prompt, seed)

    # ----------------------------------------------------------------- the end
    def finish(self) -> dict[str, Any]:
        """Test metrics, final weights, data.json, summary.json; returns the summary."""
        test = self.evaluate_split("test")
        if test:
            self.emit(
                {"step": self.state.step, "split": "test", **{k[5:]: v for k, v in test.items()}}
            )
        if self.strategy:  # every rank takes part (FSDP gathers shards); rank 0 writes one file
            self.strategy.save_model(self.model, self.files.model, frozen_base(self.converters))
        elif self.dist.is_main:
            save_weights(self.model, self.files.model, frozen_base(self.converters))
        if self.dist.is_main:
            self.task.save_input_files(self.data, self.files)
            self.log.write_json(self.files.data_info.name, self.task.info(self.data, self.spec))
        summary = self.summary(test)
        self.shell.write_summary(summary)
        # Every rank samples (under FSDP each forward is a collective); only rank 0 logs it.
        if self._samples_text:
            summary["sample"] = self.sample(self.cfg.train.sample_tokens)
            self.emit({"step": self.state.step, "split": "sample", "text": summary["sample"]})
        self.shell.finished(summary)  # status.json: finished
        return summary

    def _close_files(self) -> None:
        self.shell.close()

    def close(self) -> None:
        """Close the run's files and the progress bar, and leave the process group."""
        self._close_files()
        if self.strategy:
            self.strategy.close()
            self.strategy = None

    def summary(self, test: dict[str, float] | None = None) -> dict[str, Any]:
        """summary.json: every run's fields (hone.engine.shell) and the trainer's own."""
        return self.shell.summary(
            self.task.metric,
            test,
            head={"epochs": round(self.batcher.epochs_done, 4)},
            directions={name: m.direction for name, m in self.user_metrics.items()},
            num_parameters=self.num_parameters,
            device=self.device,
            details={
                "optimizer": type(self.optimizer).__name__,
                **self.precision.summary(),  # what ran, and why
                **self.throughput.summary(),
            },
        )
