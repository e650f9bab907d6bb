"""A LoRA layer's training product with the update inside the weight: x (W + s B A)^T + b.

What PEFT (and hone before this) computes for a LoRA layer in training is the base's
product and the update's apart: y = x W^T + s (x A^T) B^T, and in backward the input's
gradient through both, dx = dy W + s (dy B) A. Each of the update's products reads or
writes a whole (rows, in) or (rows, out) activation for a rank-r result or operand, so they
run at memory speed, and each adds its (rows, out) or (rows, in) result into the base's.
With the weight and the update summed first (W + s B A: out x in, one rank-r product, no
activation in it), the layer's forward is one matmul and its input's gradient another, as
a frozen layer's; only the adapters' own gradients need the skinny products:

    dA = s (dy B)^T x        dB = s dy^T (x A^T)

SmolLM2-135M's shapes at batch 4 x 256, fp32, 2 threads, forward and backward of one
layer, summed against apart (`bench/lora.py summed`, two runs): q and o 7.8-8.1 against
8.3-8.7 ms, k and v 3.1-3.4 against 3.9, gate and up 19.5-21.7 against 20.5-22.7, down
20.4-22.3 against 22.0-23.8; a block 81-89 against 87-94 ms; whole training steps 1.02-1.03x
the tokens/s (within the machine's spread of a few percent).

The summed weight lives only inside the forward's and the backward's matmul (made twice:
kept, every layer's would stay until backward, another copy of the frozen weights). It is
an fp32 product only: in bf16 the sum would round the update to the weight's precision,
where a small update vanishes (PEFT keeps the update beside the weight for that reason), and
with dropout the update sees another input than the base.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class _WeightWithUpdate(torch.autograd.Function):
    """x (W + s B A)^T + b with W and b frozen: gradients for x, A and B."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,  # (..., in)
        weight: torch.Tensor,  # W (out, in), frozen
        bias: torch.Tensor | None,  # (out,), frozen
        a: torch.Tensor,  # A (r, in)
        b: torch.Tensor,  # B (out, r)
        scale: float,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight, a, b)
        ctx.scale = scale
        return F.linear(x, torch.addmm(weight, b, a, alpha=scale), bias)  # (..., out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, a, b = ctx.saved_tensors
        scale = ctx.scale
        x_rows = x.reshape(-1, x.size(-1))  # (N, in)
        grad_rows = grad.reshape(-1, grad.size(-1))  # (N, out)
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_rows @ torch.addmm(weight, b, a, alpha=scale)).view(x.shape)
        if ctx.needs_input_grad[3]:
            grad_h = (grad_rows @ b).mul_(scale)  # (N, r): the gradient of x A^T
            grad_a = grad_h.t() @ x_rows  # (r, in)
        if ctx.needs_input_grad[4]:
            h = (x_rows @ a.t()).mul_(scale)  # (N, r)
            grad_b = grad_rows.t() @ h  # (out, r)
        return grad_x, None, None, grad_a, grad_b, None


def with_update(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """x (..., in) -> x (W + scale B A)^T + bias (..., out), all fp32, W and bias frozen."""
    assert x.dtype == weight.dtype == a.dtype == b.dtype == torch.float32
    assert not weight.requires_grad and (bias is None or not bias.requires_grad)
    return _WeightWithUpdate.apply(x, weight, bias, a, b, scale)
