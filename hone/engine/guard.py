"""The NaN guard: a step whose loss or gradient norm is not finite changes nothing.

Checked before the optimizer steps (one host sync per step; `train.nan_guard=false` trades
it for speed); under several processes every rank skips together. L-BFGS and Newton step
through a closure: its first call, before the optimizer moves anything, is checked. What
happens after a skipped step (logging, rollback) is hone.engine.checkpointing's business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hone.checkpoint import FaultInjector, FiniteCheck, grad_norm, poison
from hone.config import opt, register_train_part


@register_train_part("guard")
@dataclass
class GuardConfig:
    """The guard's keys in [train], and how many bad steps hone.engine.checkpointing bears."""

    nan_guard: bool = opt(
        True, "skip steps whose loss or gradient norm is not finite (one host sync per step)"
    )
    max_bad_steps: int = opt(3, "consecutive non-finite steps before rolling back", ge=1)
    max_rollbacks: int = opt(2, "rollbacks before giving up with exit code 3", ge=0)
    rollback_skip: int = opt(1, "batches to skip after a rollback", ge=0)


class NonFiniteStep(Exception):
    """Raised from a guarded closure before an L-BFGS/Newton step touches anything."""

    def __init__(self, loss: torch.Tensor) -> None:
        super().__init__("non-finite step")
        self.loss = loss


class NanGuard:
    """Checks each step of `params` (after any wrapping or sharding)."""

    def __init__(self, params: list[torch.Tensor], distributed: bool) -> None:
        self.params, self.distributed = params, distributed
        self.injector = FaultInjector.from_env()  # None unless a test injects faults
        self._finite = FiniteCheck(params)
        # One process with gradients of one floating dtype on one device (the common case):
        # FiniteCheck's kernel is called directly, without its per-call sorting out of shards,
        # dtypes and norms (tiny MLP of bench/overhead_mlp.py, inside the loop: 20 -> 14 us).
        self._direct = not distributed and self._finite.fused
        self.step_ok = True
        self.loss = torch.zeros(())  # of the last checked step, for the fault event
        self.norm: torch.Tensor | None = None

    def next_faults(self) -> set[str] | None:
        """Test-only injected faults of the step about to be attempted (None: no injector)."""
        return self.injector.next_attempt() if self.injector else None

    def check(
        self, loss: torch.Tensor, norm: torch.Tensor | None, faults: set[str] | None = None
    ) -> bool:
        """Whether the step's loss and gradient norm are finite (on every rank)."""
        if faults:
            loss = poison(faults, loss, self.params)
        if norm is None and self._direct:
            ok = self._all_finite(loss)
        else:
            if norm is not None and type(norm) is not torch.Tensor:  # a DTensor (sharded clipping)
                norm = norm.to_local()  # type: ignore[attr-defined]
            ok = self._finite(loss, norm)
        if not ok and norm is None:  # for the fault event, off the hot path
            norm = grad_norm(self.params)
        if self.distributed:  # every rank must skip together
            flag = torch.tensor([0.0 if ok else 1.0], device=loss.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            ok = flag.item() == 0.0
        self.step_ok, self.loss, self.norm = ok, loss, norm
        return ok

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """FiniteCheck's fused check of the loss and the gradients, for plain tensors."""
        tensors = [grad for p in self.params if (grad := p.grad) is not None]
        if not tensors or loss.dtype != tensors[0].dtype:
            return self._finite(loss, None)
        tensors.append(loss.reshape(1))  # the step's detached loss: checked in the same kernel
        found = self._finite.found  # zero before each check: reset only after a find
        torch._amp_foreach_non_finite_check_and_unscale_(tensors, found, self._finite.scale)
        if found.item() == 0.0:
            return True
        found.zero_()
        return False

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
                if not self.check(loss, None, faults - {"nan_loss"} if faults else None):
                    raise NonFiniteStep(self.loss)
            return loss

        self.step_ok = True
        return guarded
