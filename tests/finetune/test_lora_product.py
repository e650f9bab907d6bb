"""A LoRA layer's training product with the update inside the weight (hone.finetune.lora_product):
the gradients of the unmerged formula, taken by the layer only where it may be, and no
second copy of the weight kept for backward."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from hone.finetune.lora import LoRA, LoRALinear, adapter_parameters
from hone.finetune.lora_product import with_update
from hone.pretrained.weights import load_pretrained


def unmerged(x: torch.Tensor, w: torch.Tensor, bias: Any, a: Any, b: Any, s: float) -> Any:
    return nn.functional.linear(x, w, bias) + s * (x @ a.t()) @ b.t()


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("x_needs_grad", [True, False])
def test_it_gives_the_unmerged_layers_outputs_and_gradients(
    with_bias: bool, x_needs_grad: bool
) -> None:
    gen = torch.Generator().manual_seed(0)
    rows, n_in, n_out, rank, scale = (2, 7), 24, 40, 4, 2.5
    x = torch.randn(*rows, n_in, generator=gen)
    w = torch.randn(n_out, n_in, generator=gen) * 0.2
    bias = torch.randn(n_out, generator=gen) if with_bias else None
    a, b = torch.randn(rank, n_in, generator=gen), torch.randn(n_out, rank, generator=gen)
    grad = torch.randn(*rows, n_out, generator=gen)
    results = []
    for fn, dtype in ((with_update, torch.float32), (unmerged, torch.float64)):
        leaves = [t.to(dtype, copy=True).requires_grad_() for t in (x, a, b)]
        leaves[0].requires_grad_(x_needs_grad)
        cast_bias = bias.to(dtype) if bias is not None else None
        y = fn(leaves[0], w.to(dtype), cast_bias, leaves[1], leaves[2], scale)
        y.backward(grad.to(dtype))
        results.append([y.detach(), *(t.grad for t in leaves)])
    for ours, exact in zip(*results, strict=True):
        if exact is None:
            assert ours is None and not x_needs_grad
            continue
        assert ours.dtype == torch.float32 and ours.shape == exact.shape
        # fp32 rounding of sums of hundreds: within a millionth of the largest value
        atol = 1e-6 * float(exact.abs().max())
        torch.testing.assert_close(ours.double(), exact, rtol=1e-5, atol=atol)


def graph_of(layer: LoRALinear, x: torch.Tensor) -> str:
    return type(layer(x).grad_fn).__name__


def test_the_layer_sums_only_when_training_in_fp32_without_dropout() -> None:
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8), rank=4, alpha=8)
    x = torch.randn(3, 16)
    assert graph_of(layer, x) == "_WeightWithUpdateBackward"
    with torch.no_grad():  # decoding: the update apart (a few rows need no summed weight)
        assert layer(x).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 would round the update away
        assert graph_of(layer, x) != "_WeightWithUpdateBackward"
    dropped = LoRALinear(nn.Linear(16, 8), rank=4, alpha=8, dropout=0.1)
    assert graph_of(dropped, x) != "_WeightWithUpdateBackward"  # A sees another input
    dropped.eval()  # no dropout in eval: the sum again
    assert graph_of(dropped, x) == "_WeightWithUpdateBackward"
    layer.merge()  # merged: the base's one matmul
    assert graph_of(layer, x) != "_WeightWithUpdateBackward"
    layer.unmerge()
    assert layer.weight is not None
    layer.weight.requires_grad_(True)  # a base weight someone unfroze gets its gradient
    assert graph_of(layer, x) != "_WeightWithUpdateBackward"
    layer(x).sum().backward()
    assert layer.weight.grad is not None


def test_backward_keeps_no_summed_copy_of_the_weight() -> None:
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(32, 48, bias=False), rank=4, alpha=8)
    x = torch.randn(5, 32, requires_grad=True)
    saved: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    weights = [t for t in saved if t.shape == (48, 32)]
    assert weights, "backward needs the frozen weight"
    assert all(t.untyped_storage().data_ptr() == layer.weight.data_ptr() for t in weights)
    y.sum().backward()
    assert layer.lora_a.weight.grad is not None and layer.lora_b.weight.grad is not None
    assert layer.weight.grad is None


def test_a_lora_model_trains_with_the_gradients_of_the_update_apart(
    tiny_checkpoint: Callable[[str], Path],
) -> None:
    """Every adapter of a tiny Llama, fp32: its gradient through the summed products against
    the same model's with the update apart (adapter dropout of p = 0: an nn.Dropout, which
    keeps a training layer off the sum, that drops nothing)."""
    model, _, _ = load_pretrained(tiny_checkpoint("llama"))
    LoRA(4, 8, 0.1, "all-linear", "fp32").convert(model)
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    generator = torch.Generator().manual_seed(0)
    for param in adapter_parameters(model).values():
        with torch.no_grad():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    ids = torch.randint(0, 200, (2, 13), generator=generator)
    model.train()
    grads = []
    for dropout in (nn.Identity(), nn.Dropout(0.0)):  # summed, then apart
        for layer in layers:
            layer.dropout = dropout
        assert (
            graph_of(layers[0], torch.randn(2, layers[0].in_features))
            == "_WeightWithUpdateBackward"
        ) == (type(dropout) is nn.Identity)
        model.zero_grad(set_to_none=True)
        model(ids[:, :-1], targets=ids[:, 1:]).backward()
        grads.append({k: p.grad.clone() for k, p in adapter_parameters(model).items()})
    assert len(grads[0]) == 2 * len(layers)
    for name, apart in grads[1].items():
        atol = 1e-5 * float(apart.abs().max())
        torch.testing.assert_close(grads[0][name], apart, rtol=1e-5, atol=atol)
