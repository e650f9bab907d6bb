"""Numeric precision of a run: autocast for the forward pass and, for fp16, a gradient scaler.

One object owns both, so the step never asks which precision it runs in: it calls
`autocast()`, `backward(loss)`, `unscale(optimizer)` before clipping and `step(optimizer)`.
fp16's `GradScaler` is created, stepped, updated and checkpointed here; in fp32 and bf16 the
same calls are the plain ones (bf16 has fp32's exponent range and needs no scaling).

`train.precision = 'auto'` (the default) is resolved here, once, by `resolve_precision`: bf16
autocast where the device multiplies bf16 in hardware (`hone.hardware.native_bf16`), else
fp32, because emulated bf16 is far slower than fp32 (issue 18). The trainer, the federated
server and a loaded run (`hone eval`, `sample`, `serve`, `compress`) all resolve it through
that one function; the run's summary.json records the answer and why ("precision",
"precision_reason").
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from hone.errors import ConfigError
from hone.hardware import BF16_CPU_FLAGS, OVERRIDE_ENV, cpu_flags, native_bf16

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device) -> tuple[str, str]:
    """(the precision `train.precision = name` means on `device`, why): 'auto' is bf16 where
    the device runs bf16 natively, else fp32; any other name is itself."""
    if name != "auto":
        return name, f"train.precision = {name!r}"
    if native_bf16(device):
        return "bf16", f"auto: native bf16 ({_bf16_evidence(device)})"
    if OVERRIDE_ENV in os.environ:
        return "fp32", f"auto: fp32, {OVERRIDE_ENV}=0"
    if device.type == "cuda":
        return "fp32", f"auto: fp32, no native bf16 on {torch.cuda.get_device_name(device)}"
    where = "this CPU" if device.type == "cpu" else f"a {device.type} device"
    return "fp32", f"auto: fp32, no native bf16 on {where}"


def _bf16_evidence(device: torch.device) -> str:
    """What showed that `device` has native bf16 (the override, the GPU, the CPU flags)."""
    if OVERRIDE_ENV in os.environ:
        return f"{OVERRIDE_ENV}=1"
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return ", ".join(sorted(cpu_flags() & set(BF16_CPU_FLAGS)))


class Precision:
    """fp32, bf16 (autocast) or fp16 (autocast + dynamic loss scaling) on `device`; `reason`
    says why this precision (e.g. what 'auto' found)."""

    def __init__(self, name: str, device: torch.device, reason: str = "") -> None:
        assert name in PRECISIONS, name
        self.name, self.device = name, device
        self.reason = reason or f"train.precision = {name!r}"
        self.dtype = _DTYPES.get(name, torch.float32)
        # fp16's narrow exponent makes small gradients underflow: scale the loss up before
        # backward and the gradients down before the step; skip steps that overflowed.
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    @classmethod
    def from_config(cls, name: str, device: torch.device) -> Precision:
        """The run's `train.precision` on its device ('auto' resolved); fp16 is refused off
        CUDA."""
        if name == "fp16" and device.type != "cuda":
            raise ConfigError(
                "train.precision = 'fp16' needs a CUDA device; use --train.precision=bf16 on the CPU"
            )
        resolved, reason = resolve_precision(name, device)
        return cls(resolved, device, reason)

    def summary(self) -> dict[str, str]:
        """The precision the run used and why, for its summary.json."""
        return {"precision": self.name, "precision_reason": self.reason}

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


def inference_precision(name: str, device: torch.device) -> Precision:
    """The precision a run trained in, on `device` ('auto' resolved for this device, as the
    trainer does); fp16 (CUDA only) runs in fp32 elsewhere."""
    name, reason = resolve_precision(name, device)
    if name == "fp16" and device.type != "cuda":
        return Precision("fp32", device, f"trained in fp16, which needs CUDA: fp32 on {device}")
    return Precision(name, device, reason)
