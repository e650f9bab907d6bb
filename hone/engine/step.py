"""One optimizer step: forward, loss, backward, clip, guard, step, schedule.

The hot path does per step only what a hand-written loop does (forward, backward, optimizer
and schedule step) plus what the config asks for: accumulation, penalties, clipping, the NaN
guard, a teacher's forward pass, the `on_after_backward` hooks of observers that have one,
and the `post_optimizer_step` hooks of model converters that have one (hone.models.converters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

import torch
from torch import nn

from hone.config import Config
from hone.distributed.strategy import Strategy
from hone.engine.guard import NanGuard, NonFiniteStep
from hone.engine.precision import Precision
from hone.engine.task_base import ModelLoss
from hone.errors import ConfigError
from hone.optim import OptimizerKind

Batch = tuple[torch.Tensor, torch.Tensor]
_NO_CONTEXT = nullcontext()  # reusable: entering it does nothing


class Stepper:
    """Runs optimizer steps of `model` (called through `forward`, the wrapped or compiled
    module) with `loss_fn(outputs, targets)`, or `loss_fn(outputs, targets, teacher_outputs)`
    when a teacher is given."""

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        forward: Callable[[torch.Tensor], torch.Tensor],
        train_module: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        optimizer: torch.optim.Optimizer,
        schedule: Any,
        kind: OptimizerKind,
        precision: Precision,
        strategy: Strategy | None,
        device: torch.device,
        teacher: nn.Module | None = None,
        post_step: Iterable[Callable[[nn.Module], None]] = (),
        model_loss: ModelLoss | None = None,
        weights: Callable[[list[Batch], Strategy | None], torch.Tensor | None] | None = None,
    ) -> None:
        self.cfg, self.model, self.forward, self.train_module = cfg, model, forward, train_module
        self.loss_fn, self.optimizer, self.schedule, self.kind = loss_fn, optimizer, schedule, kind
        self.precision, self.strategy, self.device, self.teacher = (
            precision,
            strategy,
            device,
            teacher,
        )
        if teacher is not None and kind.closure:
            raise ConfigError(
                f"optim.name = {cfg.optim.name!r} re-evaluates the loss in a closure and cannot "
                "distill from a teacher; set --optim.name=adamw (or sgd)"
            )
        self.guard = NanGuard(list(model.parameters()), strategy is not None)
        self.after_backward: list[Any] = []  # observers; set by the trainer
        self.post_step = list(post_step)  # converters' post_optimizer_step hooks: usually none
        self.owner: Any = None  # what the hooks are called with (the trainer)
        self.model_loss = model_loss  # a loss the model computes from the targets: usually none
        # The micro-batches' shares of a step's loss (Task.accumulation_weights): None, 1/K
        self.weights = weights
        self.penalized = [p for p in model.parameters() if p.ndim >= 2]
        self.penalty_on = bool(cfg.reg.l1 or cfg.reg.l2)
        # A constant schedule without warmup never changes the lr: skip stepping it per step.
        self.schedule_moves = not (
            cfg.schedule.name == "constant" and cfg.schedule.warmup_steps == 0
        )
        # Decided once rather than per step (each a few hundred ns of Python per call): the
        # autocast factory, and whether to unscale (fp16), clip and check anything at all.
        self._autocast = precision.autocast
        self._scaled = precision.checks_gradients
        self._clips = bool(cfg.train.clip_value or cfg.train.clip_norm)
        self._guarded = cfg.train.nan_guard

    @property
    def ok(self) -> bool:
        """Whether the last step was finite (and so was taken)."""
        return self.guard.step_ok

    def step(self, batches: list[Batch]) -> torch.Tensor:
        """One optimizer step over the step's micro-batches; returns the mean loss (on device)."""
        faults = self.guard.next_faults()  # None unless a test injects faults
        if self.kind.closure:
            return self._closure_step(batches, faults)
        autocast, precision, device = self._autocast, self.precision, self.device
        scale = 1.0 / len(batches)
        weights = self.weights(batches, self.strategy) if self.weights is not None else None
        total: torch.Tensor | None = None
        for i, (x, y) in enumerate(batches):
            if x.device != device or y.device != device:  # cheaper to ask than to call .to
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            # Across processes, gradients are communicated once per step: on the last micro-batch.
            with self._sync_context(last=i == len(batches) - 1):
                with autocast():
                    if self.model_loss is not None:
                        loss = self.model_loss(self.forward, x, y)
                    elif self.teacher is None:
                        loss = self.loss_fn(self.forward(x), y)
                    else:
                        loss = self.loss_fn(self.forward(x), y, self._teach(x))
                # Only the ops a step needs: no multiply by 1 nor add of a zero penalty.
                if weights is not None:
                    loss = loss * weights[i]
                elif scale != 1.0:
                    loss = loss * scale
                if self.penalty_on:
                    loss = loss + self.penalty()
                precision.backward(loss)
            total = loss.detach() if total is None else total + loss.detach()
        assert total is not None
        for observer in self.after_backward:
            observer.on_after_backward(self.owner)
        if self._scaled:
            precision.unscale(self.optimizer)
        norm = self.clip() if self._clips else None
        # With fp16 the scaler skips steps whose gradients overflowed; the guard checks the loss.
        if self._guarded and not self.guard.check(total, None if self._scaled else norm, faults):
            self.optimizer.zero_grad(set_to_none=True)  # skip: params, state, lr unchanged
            return total
        precision.step(self.optimizer)
        for hook in self.post_step:
            hook(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        if self.schedule_moves:
            self.schedule.step()
        return total

    @torch.no_grad()
    def _teach(self, x: torch.Tensor) -> torch.Tensor:
        assert self.teacher is not None
        return self.teacher(x)

    def _sync_context(self, last: bool) -> AbstractContextManager[None]:
        if self.strategy is None or last:
            return _NO_CONTEXT
        return self.strategy.no_sync(self.train_module)

    def penalty(self, params: Iterable[torch.Tensor] | None = None) -> torch.Tensor | float:
        """Explicit L1 and L2 penalties on the weight matrices (not biases or norms)."""
        reg = self.cfg.reg
        if not (reg.l1 or reg.l2):
            return 0.0
        params = self.penalized if params is None else [p for p in params if p.ndim >= 2]
        penalty: torch.Tensor | float = 0.0
        if reg.l1:
            penalty = penalty + reg.l1 * sum(p.abs().sum() for p in params)
        if reg.l2:
            penalty = penalty + reg.l2 * sum(p.pow(2).sum() for p in params)
        return penalty

    def clip(self) -> torch.Tensor | None:
        """Clip the gradients; returns their norm (before clipping) when clipping by norm."""
        t = self.cfg.train
        if t.clip_value:
            nn.utils.clip_grad_value_(self.model.parameters(), t.clip_value)
        if t.clip_norm:
            return nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_norm, foreach=True)
        return None

    def _closure_step(self, batches: list[Batch], faults: set[str] | None) -> torch.Tensor:
        """L-BFGS and Newton re-evaluate the loss themselves through a closure."""
        batches = [(x.to(self.device), y.to(self.device)) for x, y in batches]
        scale = 1.0 / len(batches)
        autocast = self.precision.autocast

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=False)
            total = torch.zeros((), device=self.device)
            for x, y in batches:
                with autocast():
                    loss = self.loss_fn(self.forward(x), y) * scale + self.penalty()
                loss.backward()
                total += loss.detach()
            self.clip()
            return total

        kwargs: dict[str, Any] = {}
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
                return cast(torch.Tensor, total + self.penalty(tensors))

            kwargs["loss_fn"] = loss_fn
        # The closure's first call, before the optimizer moves anything, is checked for NaN.
        guarded = self.guard.guarded_closure(closure, faults)
        try:
            # torch types the closure as returning a float; it returns the loss tensor.
            loss = self.optimizer.step(guarded, **kwargs)  # type: ignore[arg-type]
        except NonFiniteStep as skipped:
            return skipped.loss
        for hook in self.post_step:
            hook(self.model)
        if self.schedule_moves:
            self.schedule.step()
        return loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
