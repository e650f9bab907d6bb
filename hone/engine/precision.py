"""Numeric precision of a run: autocast for the forward pass and, for fp16, a gradient scaler.

One object owns both, so the step never asks which precision it runs in: it calls
`autocast()`, `backward(loss)`, `unscale(optimizer)` before clipping and `step(optimizer)`.
fp16's `GradScaler` is created, stepped, updated and checkpointed here; in fp32 and bf16 the
same calls are the plain ones (bf16 has fp32's exponent range and needs no scaling).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from hone.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """fp32, bf16 (autocast) or fp16 (autocast + dynamic loss scaling) on `device`."""

    def __init__(self, name: str, device: torch.device) -> None:
        assert name in PRECISIONS, name
        self.name, self.device = name, device
        self.dtype = _DTYPES.get(name, torch.float32)
        # fp16's narrow exponent makes small gradients underflow: scale the loss up before
        # backward and the gradients down before the step; skip steps that overflowed.
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    @classmethod
    def from_config(cls, name: str, device: torch.device) -> Precision:
        """The run's `train.precision` on its device; fp16 is refused off CUDA."""
        if name == "fp16" and device.type != "cuda":
            raise ConfigError(
                "train.precision = 'fp16' needs a CUDA device; use --train.precision=bf16 on the CPU"
            )
        return cls(name, device)

    @property
    def autocast(self) -> Callable[[], AbstractContextManager[Any]]:
        """A factory of the forward pass's autocast context (a no-op in fp32)."""
        if self.name == "fp32":
            return contextlib.nullcontext
        device_type, dtype = self.device.type, self.dtype
        return lambda: torch.autocast(device_type=device_type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true scale (before clipping or inspecting them)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step the optimizer; with fp16 the scaler skips a step whose gradients overflowed and
        adapts the scale. Returns whether the parameters were stepped."""
        if self.scaler is None:
            optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        # The scale only drops when the step was skipped for inf/NaN gradients.
        return self.scaler.get_scale() >= scale

    @property
    def checks_gradients(self) -> bool:
        """Whether non-finite gradients are this object's business (fp16: the scaler's)."""
        return self.scaler is not None

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
