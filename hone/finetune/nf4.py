"""A frozen weight held in 4 bits: NF4, the data type of QLoRA (Dettmers et al. 2023, "QLoRA:
Efficient Finetuning of Quantized LLMs"), through bitsandbytes' quantize_4bit and
dequantize_4bit (on CUDA, and on CPUs through its torch backend).

Each block of 64 consecutive numbers of the (out, in) weight is scaled by its absolute
maximum (one fp32 number a block) and each number rounded to the nearest of 16 levels placed
at the quantiles of a normal distribution, 4 bits each: 0.5625 bytes a number against fp32's
4 and bf16's 2. Quantizing is deterministic: a run rebuilt from its config (resume, `hone
eval RUN`) holds the very bytes it trained on. The block scales are not quantized again
(QLoRA's "double quantization" saves 0.37 bits a number more).

The packed bytes, the scales and the 16 levels are buffers, so that the layer moves with its
model (`.to(device)`); outside the state dict: the frozen base comes from its checkpoint,
which a run only refers to (hone.finetune.frozen_base). The scales and levels are kept as the
bits of their fp32 values (an int32 view): `model.to(torch.bfloat16)` casts every floating
buffer, and a rounded scale would change every number of its block.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

import torch
from torch import nn

from hone.errors import ConfigError

BLOCK = 64  # numbers a scale covers: bitsandbytes' and PEFT's QLoRA default


def require_bitsandbytes() -> None:
    """One line (ConfigError) when bitsandbytes is not installed."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            "lora.base_dtype = nf4 needs bitsandbytes: pip install 'hone-ml[qlora]', "
            "or set --lora.base_dtype=bf16"
        )


@functools.cache
def _functional():  # type: ignore[no-untyped-def]
    """bitsandbytes.functional, imported quietly: on a CPU with AVX512-BF16 its import warns
    that an optional kernel package (`kernels`) is missing, which hone does not use."""
    quiet = logging.getLogger("bitsandbytes")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        import bitsandbytes.functional as functional
    finally:
        quiet.setLevel(level)
    return functional


class NF4Weight(nn.Module):
    """`weight` (out, in) in NF4; `dequantized(dtype)` gives it back (out, in)."""

    packed: torch.Tensor  # (out * in / 2, 1) uint8: two numbers a byte
    scale_bits: torch.Tensor  # (out * in / 64,) int32: the fp32 scales' bits
    level_bits: torch.Tensor  # (16,) int32: the fp32 bits of NF4's levels

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        functional = _functional()
        packed, state = functional.quantize_4bit(weight.detach(), blocksize=BLOCK, quant_type="nf4")
        self.shape, self.dtype = weight.shape, weight.dtype
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("scale_bits", state.absmax.view(torch.int32), persistent=False)
        # kept, not asked of bitsandbytes again at each dequantizing (a new tensor each time)
        self.register_buffer("level_bits", state.code.view(torch.int32), persistent=False)

    def dequantized(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight (out, in) as its 4 bits give it back, in `dtype` (else the dtype it was
        quantized from); a fresh contiguous tensor."""
        functional = _functional()
        state = functional.QuantState(
            absmax=self.scale_bits.view(torch.float32),
            shape=self.shape,
            code=self.level_bits.view(torch.float32),
            blocksize=BLOCK,
            quant_type="nf4",
            dtype=self.dtype,
        )
        weight: torch.Tensor = functional.dequantize_4bit(self.packed, state)
        return weight if dtype is None or dtype == weight.dtype else weight.to(dtype)

    def nbytes(self) -> int:
        return self.packed.nbytes + self.scale_bits.nbytes

    def extra_repr(self) -> str:
        return f"shape={tuple(self.shape)}, from={self.dtype}"
