"""Numerical faults: detecting a non-finite step, and injecting one for tests.

The check costs one fused pass over the gradients and one host sync per step (the
`.item()` that decides whether to step); see BENCHMARKS.md for what it costs the tiny MLP.

`HONE_FAULT_INJECT` is a testing aid, deliberately not a config key: it is read once when a
Trainer is built and makes chosen training-step attempts of this process non-finite.
Syntax: `KIND@ATTEMPTS[;KIND@ATTEMPTS]`, KIND `nan_loss` or `nan_grad`, ATTEMPTS a comma list
of attempt numbers (1-based, counted from this process's first training step; a skipped step
is an attempt too) where `N-` means "N and every later attempt". Example:
`HONE_FAULT_INJECT="nan_loss@5,6,7"` makes attempts 5, 6 and 7 produce a NaN loss.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from hone.errors import ConfigError

INJECT_ENV = "HONE_FAULT_INJECT"
KINDS = ("nan_loss", "nan_grad")


@dataclass
class FaultInjector:
    """Which attempts get which injected fault; counts attempts as they happen."""

    rules: list[tuple[str, int, bool]]  # (kind, attempt, and every later one)
    attempts: int = field(default=0)

    @classmethod
    def from_env(cls) -> FaultInjector | None:
        spec = os.environ.get(INJECT_ENV, "").strip()
        return cls.parse(spec) if spec else None

    @classmethod
    def parse(cls, spec: str) -> FaultInjector:
        rules = []
        for part in spec.split(";"):
            kind, _, attempts = part.strip().partition("@")
            if kind not in KINDS or not attempts:
                raise ConfigError(
                    f"{INJECT_ENV} must look like 'nan_loss@5,6' or 'nan_grad@3-', got {spec!r}"
                )
            for item in attempts.split(","):
                onward = item.endswith("-")
                number = item.rstrip("-")
                if not number.isdigit() or int(number) < 1:
                    raise ConfigError(
                        f"{INJECT_ENV} attempts must be numbers >= 1, got {item!r} in {spec!r}"
                    )
                rules.append((kind, int(number), onward))
        return cls(rules)

    def next_attempt(self) -> set[str]:
        """Start the next attempt; return the fault kinds to inject into it."""
        self.attempts += 1
        n = self.attempts
        return {kind for kind, at, onward in self.rules if n == at or (onward and n > at)}


def poison(kinds: set[str], loss: torch.Tensor, params: Iterable[torch.Tensor]) -> torch.Tensor:
    """Apply injected faults after backward: a NaN loss and/or a NaN in the first gradient."""
    if "nan_grad" in kinds:
        for p in params:
            if p.grad is not None:
                p.grad.view(-1)[0] = float("nan")
                break
    if "nan_loss" in kinds:
        loss = loss * float("nan")
    return loss


def local_shard(t: torch.Tensor) -> torch.Tensor:
    # A sharded (DTensor) gradient: its local shard is what this process holds.
    if type(t) is torch.Tensor or not hasattr(t, "to_local"):  # the first test: the hot path
        return t  # a plain tensor or parameter
    return t.to_local()  # type: ignore[no-any-return]


def grad_norm(params: Sequence[torch.Tensor], same_kind: bool = False) -> torch.Tensor | None:
    """The 2-norm of this process's gradients (on device, no sync); None without gradients.

    `same_kind`: the caller knows every gradient has one device and dtype.
    """
    grads = [local_shard(p.grad) for p in params if p.grad is not None]
    if not grads:
        return None
    if not same_kind and len({(g.device, g.dtype) for g in grads}) > 1:
        return torch.nn.utils.get_total_norm(grads, foreach=True)
    # One fused kernel for the per-tensor norms, without get_total_norm's grouping by device
    # and dtype, which costs more than the norms themselves on small models (tiny MLP on the
    # CPU: 72 -> 31 us).
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def is_finite(loss: torch.Tensor, norm: torch.Tensor | None) -> bool:
    """Whether the loss and the gradient norm are finite (one host sync)."""
    value = loss if norm is None else loss + norm.to(loss.dtype)
    return bool(torch.isfinite(value).item())


class FiniteCheck:
    """Are a step's loss and gradients all finite? One fused kernel and one host sync.

    The kernel is the one torch.amp.GradScaler uses to find infs in gradients
    (`torch._amp_foreach_non_finite_check_and_unscale_`), given a scale of exactly 1, which
    leaves every value as it is. Measured on the tiny MLP of bench/overhead_mlp.py (CPU time
    per step, 1 thread): about 10 us, against 75-190 us for the isfinite of a gradient norm.
    Gradients of mixed devices or dtypes take the norm route instead.
    """

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        self.params = params
        kinds = {(p.device, p.dtype) for p in params}
        self.fused = len(kinds) == 1 and next(iter(kinds))[1].is_floating_point
        device = params[0].device if params else torch.device("cpu")
        self.found = torch.zeros(1, device=device)
        self.scale = torch.ones(1, device=device)

    def __call__(self, loss: torch.Tensor, norm: torch.Tensor | None = None) -> bool:
        grads = [local_shard(p.grad) for p in self.params if p.grad is not None]
        extra = [t.detach().reshape(1) for t in (loss, norm) if t is not None]
        if self.fused and grads and all(t.dtype == grads[0].dtype for t in extra):
            self.found.zero_()
            torch._amp_foreach_non_finite_check_and_unscale_(grads + extra, self.found, self.scale)
            return self.found.item() == 0.0
        if norm is None:
            norm = grad_norm(self.params)
        return is_finite(loss, norm)


def describe(loss: torch.Tensor, norm: torch.Tensor | None) -> dict[str, object]:
    """What went bad, for the fault event (off the hot path)."""
    bad = []
    if not torch.isfinite(loss).item():
        bad.append("loss")
    if norm is not None and not torch.isfinite(norm).item():
        bad.append("grad_norm")
    return {
        "reason": "non-finite " + " and ".join(bad or ["loss"]),
        "loss": float(loss),
        "grad_norm": float(norm) if norm is not None else None,
    }
