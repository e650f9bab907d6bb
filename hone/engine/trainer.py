"""The training loop: build every component from the config, step, evaluate, log, stop.

The hot loop does per step only what a hand-written loop does (forward, backward, optimizer
and schedule step) plus an on-device loss accumulation. Everything that needs the host
(logging, progress, time checks that cost a sync) happens every `log.every` steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hone.checkpoint import StopSignals
from hone.config import Config
from hone.data import FullBatcher, TensorBatcher, TensorData, TokenData, WindowBatcher, build_data
from hone.distributed.context import DistContext
from hone.distributed.dcp import ShardedStateIO, is_sharded
from hone.distributed.strategy import build_strategy
from hone.engine.checkpointing import Checkpointing, NonFiniteStep
from hone.engine.early_stopping import EarlyStopping
from hone.engine.evaluate import METRIC_OF_TASK, evaluate, tensor_batches
from hone.engine.runtime import (
    enable_fast_matmul,
    precision_context,
    resolve_device,
    seed_everything,
)
from hone.losses import build_loss
from hone.models import ModelSpec, build_model, num_parameters
from hone.optim import build_optimizer, build_schedule, optimizer_kind
from hone.track.progress import ProgressBar
from hone.track.run import RunLog

# Called after each evaluation with (step, {"val_loss": ..., "val_accuracy": ...}); may raise
# to end the run (the tuner's pruning does).
EvalCallback = Callable[[int, dict[str, float]], None]


def model_spec(data: TensorData | TokenData, cfg: Config) -> ModelSpec:
    if isinstance(data, TokenData):
        vocab = cfg.model.vocab_size or data.vocab_size
        return ModelSpec("lm", (cfg.model.block_size,), vocab, vocab_size=vocab)
    return ModelSpec(data.task, data.input_shape, data.num_outputs)


@dataclass
class LoopState:
    """The loop's own counters; checkpointed with everything else."""

    step: int = 0
    train_seconds: float = 0.0  # time spent in training steps, evaluation excluded
    samples_seen: int = 0
    last_val: dict[str, float] = field(default_factory=dict)
    best_val: dict[str, float] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclass
class LogWindow:
    """Train losses summed since the last log step; checkpointed, so a resumed run logs the
    same mean losses as one never stopped."""

    loss_sum: torch.Tensor  # on the device: adding to it costs no host sync
    count: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_sum.copy_(state["loss_sum"])
        self.count = int(state["count"])


class Trainer:
    """Trains the model a `Config` describes; `fit()` returns the run's summary."""

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        dist: DistContext | None = None,
        data: TensorData | TokenData | None = None,
        callbacks: Iterable[EvalCallback] = (),
        resume: bool | str | Path = False,
    ) -> None:
        """`resume`: False starts afresh; True continues from the newest valid checkpoint in
        run_dir; "auto" does so when there is one; a path names one checkpoint directory."""
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.dist = dist or DistContext.from_env()
        self.callbacks = list(callbacks)
        t = cfg.train
        seed_everything(t.seed, t.deterministic)
        self.device = resolve_device(t.device, self.dist.local_rank)
        # None in a single process; else the process group is joined here (hone.distributed).
        self.strategy = build_strategy(cfg, self.dist, self.device)
        enable_fast_matmul(self.device)
        self.autocast = precision_context(t, self.device)
        self.data = data if data is not None else build_data(cfg)
        self.task = "lm" if isinstance(self.data, TokenData) else self.data.task
        self.spec = model_spec(self.data, cfg)
        self.loss_fn = build_loss(cfg.loss, self.task)
        self.model = build_model(cfg.model, self.spec).to(self.device)
        if hasattr(self.model, "activation_checkpointing"):
            self.model.activation_checkpointing = t.activation_checkpointing
        self.num_parameters = num_parameters(self.model)
        # The module called in training steps (DDP wraps, FSDP shards in place); before the
        # optimizer, which must see FSDP's sharded parameters.
        self.train_module = self.strategy.wrap(self.model) if self.strategy else self.model
        self.kind = optimizer_kind(cfg.optim.name)
        self.optimizer = build_optimizer(cfg.optim, self.model, self.device)
        self.batcher = self._build_batcher()
        self.total_steps = self._planned_steps()
        self.schedule = build_schedule(cfg.schedule, self.optimizer, self.total_steps)
        # A constant schedule without warmup never changes the lr: skip stepping it per step.
        self._schedule_moves = not (
            cfg.schedule.name == "constant" and cfg.schedule.warmup_steps == 0
        )
        self.forward = torch.compile(self.train_module) if t.compile else self.train_module
        self.early_stopping = EarlyStopping(t.monitor, t.patience, t.min_delta)
        self.state = LoopState()
        self.metric_name = METRIC_OF_TASK[self.task]
        self._penalized = [p for p in self.model.parameters() if p.ndim >= 2]
        self.window = LogWindow(torch.zeros((), device=self.device))
        self.checkpointing = Checkpointing(self)
        # Before the log opens metrics.jsonl: resuming cuts it back to the checkpoint.
        resume_from = self.checkpointing.prepare(resume)
        if resume_from is not None and not self.strategy and is_sharded(resume_from.path):
            # Written by several processes (DCP shards): one process reads it just as well.
            self.checkpointing.manager.io = ShardedStateIO()
        # TensorBoard drops the events a killed run logged after its checkpoint, as metrics.jsonl does.
        purge_step = resume_from.step + 1 if resume_from is not None else None
        self.log = RunLog(self.run_dir, cfg, self.dist.is_main, cfg.log.tensorboard, purge_step)
        self.stop_reason = ""
        self._agreed_seconds = 0.0  # train_seconds averaged over ranks at the last log step
        self.tokens_per_sample = cfg.model.block_size if self.task == "lm" else 0
        if resume_from is not None:  # last: everything it restores must be built
            self.checkpointing.restore(resume_from)

    # ----------------------------------------------------------------- building
    def _build_batcher(self) -> TensorBatcher | FullBatcher | WindowBatcher:
        t, d = self.cfg.train, self.dist
        if isinstance(self.data, TokenData):
            return WindowBatcher(
                self.data.train,
                self.cfg.model.block_size,
                t.batch_size,
                t.seed,
                d.rank,
                d.world_size,
                t.grad_accum,
            )
        x, y = self.data.train
        if self.kind.full_batch:
            return FullBatcher(x, y)
        return TensorBatcher(
            x, y, t.batch_size, t.seed, d.rank, d.world_size, t.grad_accum, self.data.augment
        )

    def _planned_steps(self) -> int:
        """Steps the run will take when bounded by steps or epochs (for schedules and ETA)."""
        t = self.cfg.train
        bounds = []
        if t.max_steps:
            bounds.append(t.max_steps)
        if t.max_epochs:
            bounds.append(t.max_epochs * self.batcher.steps_per_epoch)
        return min(bounds) if bounds else 0

    # ----------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        """Train until a bound, early stopping or an external stop; then evaluate and save."""
        cfg = self.cfg
        self.model.train()
        progress = ProgressBar(self.total_steps or None, cfg.log.progress, self.dist.is_main)
        log_every = cfg.log.every
        window, checkpoints = self.window, self.checkpointing
        window_start = time.perf_counter()
        window_steps = 0  # steps this process timed in the window (window.count may be resumed)
        try:
            # SIGTERM/SIGINT only set a flag; the step ends, a checkpoint is written, and
            # after_step raises TrainingInterrupted.
            with StopSignals() as signals:
                while not self._should_stop():
                    loss = self.train_step(self.batcher.next_step())
                    if not checkpoints.step_ok:  # non-finite: nothing was stepped
                        checkpoints.on_bad_step(signals.received)
                        continue
                    self.state.step += 1
                    window.loss_sum += loss
                    window.count += 1
                    window_steps += 1
                    step = self.state.step
                    if step % log_every == 0 or self._bound_reached():
                        now = time.perf_counter()
                        self.state.train_seconds += now - window_start
                        self._log_train(
                            window.loss_sum, window.count, window_steps, now - window_start
                        )
                        progress.update(step, self._progress_info())
                        window.loss_sum.zero_()
                        window.count = window_steps = 0
                        window_start = time.perf_counter()
                    if self._eval_due(step):
                        self.state.train_seconds += time.perf_counter() - window_start
                        self.run_evaluation()
                        window_start = time.perf_counter()
                    checkpoints.after_step(signals.received)
                self.state.train_seconds += time.perf_counter() - window_start
                if self.state.step and not self.state.last_val.get("_step") == self.state.step:
                    self.run_evaluation()
                checkpoints.at_end(signals.received)
        except BaseException:
            # A callback (the tuner's pruning) or an error ended the run: close the run's files
            # so what was logged is complete on disk; finish() is not reached.
            self.log.close()
            raise
        finally:
            progress.close()
        return self.finish()

    def train_step(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """One optimizer step over the step's micro-batches; returns the mean loss (on device)."""
        faults = self.checkpointing.next_faults()  # None unless a test injects faults
        if self.kind.closure:
            return self._closure_step(batches, faults)
        scale = 1.0 / len(batches)
        penalized = bool(self.cfg.reg.l1 or self.cfg.reg.l2)
        total: torch.Tensor | None = None
        for i, (x, y) in enumerate(batches):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            # Across processes, gradients are communicated once per step: on the last micro-batch.
            with self._sync_context(last=i == len(batches) - 1):
                with self.autocast():
                    loss = self.loss_fn(self.forward(x), y)
                # Only the ops a step needs: no multiply by 1 nor add of a zero penalty.
                if scale != 1.0:
                    loss = loss * scale
                if penalized:
                    loss = loss + self._penalty()
                loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        assert total is not None
        norm = self._clip()
        # The guard costs one host sync per step; train.nan_guard=false trades it for speed.
        if self.cfg.train.nan_guard and not self.checkpointing.step_is_finite(total, norm, faults):
            self.optimizer.zero_grad(set_to_none=True)  # skip: params, state, lr unchanged
            return total
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self._schedule_moves:
            self.schedule.step()
        return total

    def _sync_context(self, last: bool) -> AbstractContextManager[None]:
        if self.strategy is None or last:
            return nullcontext()
        return self.strategy.no_sync(self.train_module)

    def _penalty(self, params: Iterable[torch.Tensor] | None = None) -> torch.Tensor | float:
        """Explicit L1 and L2 penalties on the weight matrices (not biases or norms)."""
        reg = self.cfg.reg
        if not (reg.l1 or reg.l2):
            return 0.0
        params = self._penalized if params is None else [p for p in params if p.ndim >= 2]
        penalty: torch.Tensor | float = 0.0
        if reg.l1:
            penalty = penalty + reg.l1 * sum(p.abs().sum() for p in params)
        if reg.l2:
            penalty = penalty + reg.l2 * sum(p.pow(2).sum() for p in params)
        return penalty

    def _clip(self) -> torch.Tensor | None:
        """Clip the gradients; returns their norm (before clipping) when clipping by norm."""
        t = self.cfg.train
        if t.clip_value:
            nn.utils.clip_grad_value_(self.model.parameters(), t.clip_value)
        if t.clip_norm:
            return nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_norm, foreach=True)
        return None

    def _closure_step(
        self, batches: list[tuple[torch.Tensor, torch.Tensor]], faults: set[str] | None = None
    ) -> torch.Tensor:
        """L-BFGS and Newton re-evaluate the loss themselves through a closure."""
        batches = [(x.to(self.device), y.to(self.device)) for x, y in batches]
        scale = 1.0 / len(batches)

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=False)
            total = torch.zeros((), device=self.device)
            for x, y in batches:
                with self.autocast():
                    loss = self.loss_fn(self.forward(x), y) * scale + self._penalty()
                loss.backward()
                total += loss.detach()
            self._clip()
            return total

        if self.kind.functional:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            names = {id(p): n for n, p in self.model.named_parameters()}
            keys = [names[id(p)] for p in params]

            def loss_fn(tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
                values = dict(zip(keys, tensors, strict=True))
                total = sum(
                    self.loss_fn(torch.func.functional_call(self.model, values, (x,)), y) * scale
                    for x, y in batches
                )
                return total + self._penalty(tensors)

        # The closure's first call, before the optimizer moves anything, is checked for NaN.
        guarded = self.checkpointing.guarded_closure(closure, faults)
        try:
            if self.kind.functional:
                loss = self.optimizer.step(guarded, loss_fn=loss_fn)
            else:
                loss = self.optimizer.step(guarded)
        except NonFiniteStep as skipped:
            return skipped.loss
        if self._schedule_moves:
            self.schedule.step()
        return loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))

    # ----------------------------------------------------------------- bounds
    def _bound_reached(self) -> bool:
        t = self.cfg.train
        if t.max_steps and self.state.step >= t.max_steps:
            self.stop_reason = self.stop_reason or "max_steps"
            return True
        if t.max_epochs and self.batcher.epochs_done >= t.max_epochs:
            self.stop_reason = self.stop_reason or "max_epochs"
            return True
        return False

    def _should_stop(self) -> bool:
        if self.stop_reason:
            return True
        if self._bound_reached():
            return True
        t = self.cfg.train
        # The clock is read on log steps only; max_seconds is honoured to within log.every steps.
        # Across processes only the clock agreed on at log steps counts: all ranks stop together.
        seconds = self._agreed_seconds if self.strategy else self.state.train_seconds
        if t.max_seconds and seconds >= t.max_seconds:
            self.stop_reason = "max_seconds"
            return True
        return False

    def _eval_due(self, step: int) -> bool:
        every = self.cfg.train.eval_every
        if every:
            return step % every == 0
        return step % self.batcher.steps_per_epoch == 0 and self.task != "lm"

    # ----------------------------------------------------------------- logging
    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _log_train(self, loss_sum: torch.Tensor, count: int, steps: int, seconds: float) -> None:
        if self.strategy:  # the mean over the global batch, and one clock for every rank
            loss_sum, self._agreed_seconds = self.strategy.agree(loss_sum, self.state.train_seconds)
        loss = (loss_sum / count).item()
        samples = steps * self.cfg.train.batch_size
        event: dict[str, Any] = {
            "step": self.state.step,
            "split": "train",
            "epoch": round(self.batcher.epochs_done, 4),
            "loss": loss,
            "lr": self._lr(),
            "elapsed": round(self.state.train_seconds, 4),
            "samples_per_second": samples / seconds if seconds > 0 else 0.0,
        }
        if self.task == "lm":
            event.update(
                self._throughput(samples * self.tokens_per_sample / seconds if seconds > 0 else 0.0)
            )
        self.state.samples_seen += samples
        self.log.log(event)
        self._last_train = event

    def _throughput(self, tokens_per_second: float) -> dict[str, float]:
        from hone.track.throughput import flops_per_token, mfu, peak_flops

        if not hasattr(self, "_flops_per_token"):
            self._flops_per_token = flops_per_token(
                self.cfg.model, self.num_parameters, self.spec.vocab_size
            )
            # Measuring the peak (first run on a machine) draws random matrices: fork the RNGs
            # so that the run's dropout masks do not depend on whether it was cached.
            cuda = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                self._peak, self._peak_source = peak_flops(
                    self.device, self.cfg.train.peak_flops, self.cfg.train.precision
                )
        # tokens_per_second counts the global batch (all ranks); the peak is one device's.
        return {
            "tokens_per_second": tokens_per_second,
            "mfu": mfu(tokens_per_second, self._flops_per_token, self._peak * self.dist.world_size),
        }

    def _progress_info(self) -> str:
        e = self._last_train
        rate = (
            f"{e['tokens_per_second']:.0f} tok/s"
            if "tokens_per_second" in e
            else f"{e['samples_per_second']:.0f} samples/s"
        )
        val = (
            f" val {self.state.last_val['val_loss']:.4f}"
            if "val_loss" in self.state.last_val
            else ""
        )
        return f"loss {e['loss']:.4f}{val} lr {e['lr']:.3g} {rate}"

    # ----------------------------------------------------------------- evaluation
    def _split_batches(self, split: str) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        t = self.cfg.train
        if isinstance(self.data, TokenData):
            tokens = self.data.val
            # A fixed set of windows, so that successive evaluations are comparable.
            if self.strategy:  # each rank its share, in training-sized micro-batches
                d = self.dist
                batcher = WindowBatcher(
                    tokens, self.cfg.model.block_size, t.batch_size, 1234, d.rank, d.world_size,
                    t.grad_accum,
                )  # fmt: skip
                return (b for _ in range(t.eval_batches) for b in batcher.next_step())
            batcher = WindowBatcher(tokens, self.cfg.model.block_size, t.batch_size, seed=1234)
            batcher.step = 0
            return (batcher.next_step()[0] for _ in range(t.eval_batches))
        x, y = getattr(self.data, split)
        return tensor_batches(x, y, t.eval_batch_size)

    def evaluate_split(self, split: str) -> dict[str, float]:
        """Loss and metric of `split` ('val' or 'test'), keys prefixed by the split."""
        if isinstance(self.data, TensorData) and len(getattr(self.data, split)[0]) == 0:
            return {}
        result = evaluate(
            self.model,
            self._split_batches(split),
            self.loss_fn,
            self.task,
            self.device,
            self.autocast,
        )
        if self.strategy and self.task == "lm":  # equal shares of the windows: mean of means
            loss = self.strategy.mean_over_ranks(result["loss"])
            result = {"loss": loss, "perplexity": float(torch.tensor(loss).exp())}
        elif self.strategy:  # every rank evaluated everything; rank 0's numbers decide for all
            result = self.strategy.broadcast_metrics(result)
        return {f"{split}_{k}": v for k, v in result.items()}

    def run_evaluation(self) -> None:
        """Evaluate on validation, log it, update early stopping and the best values."""
        step = self.state.step
        metrics = self.evaluate_split("val")
        self.state.last_val = {**metrics, "_step": step}
        if not metrics:
            return
        self.log.log(
            {
                "step": step,
                "split": "val",
                "epoch": round(self.batcher.epochs_done, 4),
                **{k[4:]: v for k, v in metrics.items()},
            }
        )
        monitor = self.cfg.train.monitor
        if monitor not in metrics:
            from hone.errors import ConfigError

            raise ConfigError(
                f"train.monitor = {monitor!r} is not measured for this task; use one of: {', '.join(metrics)}"
            )
        for key, value in metrics.items():
            better = min if key.endswith("loss") or key.endswith("perplexity") else max
            old = self.state.best_val.get(key)
            self.state.best_val[key] = (
                value if old is None or not math.isfinite(old) else better(old, value)
            )
        if self.task == "lm" and self.cfg.train.sample_tokens:
            self.log.text("sample", self.sample(min(64, self.cfg.train.sample_tokens)), step)
        if self.early_stopping.update(metrics[monitor], step):
            self.stop_reason = "early_stopping"
        for callback in self.callbacks:
            callback(step, metrics)

    def sample(self, num_tokens: int, prompt: str = "\n", seed: int = 0) -> str:
        """A short sample from the language model (greedy-free, temperature 1, top-k 50)."""
        from hone.models.generate import generate

        assert isinstance(self.data, TokenData)
        tokenizer = self.data.tokenizer
        ids = tokenizer.encode(prompt) or [0]
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        g = torch.Generator(device=self.device)
        g.manual_seed(seed)
        with self.autocast():
            out = generate(self.model, idx, num_tokens, temperature=1.0, top_k=50, generator=g)
        return tokenizer.decode(out[0, len(ids) :].tolist())

    # ----------------------------------------------------------------- the end
    def finish(self) -> dict[str, Any]:
        """Test metrics, final weights, summary.json; returns the summary."""
        from safetensors.torch import save_model

        test = self.evaluate_split("test") if isinstance(self.data, TensorData) else {}
        if test:
            self.log.log(
                {"step": self.state.step, "split": "test", **{k[5:]: v for k, v in test.items()}}
            )
        if self.strategy:  # every rank takes part (FSDP gathers shards); rank 0 writes one file
            self.strategy.save_model(self.model, self.run_dir / "model.safetensors")
        elif self.dist.is_main:
            save_model(self.model, str(self.run_dir / "model.safetensors"))
        if self.dist.is_main:
            self._save_data_info()
        summary = self.summary(test)
        self.log.write_json("summary.json", summary)
        # Every rank samples (under FSDP each forward is a collective); only rank 0 logs it.
        if self.task == "lm" and self.cfg.train.sample_tokens:
            summary["sample"] = self.sample(self.cfg.train.sample_tokens)
            self.log.log({"step": self.state.step, "split": "sample", "text": summary["sample"]})
        self.log.close()
        if self.strategy:
            self.strategy.close()
        return summary

    def _save_data_info(self) -> None:
        """What eval, predict and sample need to read inputs the way training did."""
        if isinstance(self.data, TokenData):
            self.data.tokenizer.save(str(self.run_dir / "tokenizer"))
            info: dict[str, Any] = {"task": "lm", "vocab_size": self.spec.vocab_size}
        else:
            info = {
                "task": self.data.task,
                "input_shape": list(self.data.input_shape),
                "num_outputs": self.data.num_outputs,
                "feature_names": self.data.feature_names,
                "preprocessor": self.data.preprocessor.state_dict(),
                "class_labels": list(getattr(self.data, "class_labels", []) or []),
            }
        self.log.write_json("data.json", info)

    def summary(self, test: dict[str, float]) -> dict[str, Any]:
        best = self.state.best_val
        last = self.state.last_val
        metric = f"val_{self.metric_name}"
        return {
            "recipe": self.cfg.recipe,
            "steps": self.state.step,
            "epochs": round(self.batcher.epochs_done, 4),
            "wall_seconds": round(self.state.train_seconds, 3),
            "stop_reason": self.stop_reason or "bound",
            "final_val_loss": last.get("val_loss"),
            "best_val_loss": best.get("val_loss"),
            "best_val_metric": best.get(metric),
            "metric": self.metric_name,
            **test,
            "num_parameters": self.num_parameters,
            "device": str(self.device),
            "torch_version": torch.__version__,
            "numpy_version": np.__version__,
            "seed": self.cfg.train.seed,
            "run_dir": str(self.run_dir),
        }
