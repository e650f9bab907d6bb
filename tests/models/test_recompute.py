"""hone.models.recompute on its own (the Llama blocks' use of it: tests/models/test_llama.py)."""

from __future__ import annotations

import torch
from torch import nn

from hone.models.recompute import recomputed


def test_a_recipe_serves_every_consumer_and_a_second_backward() -> None:
    """Three layers keep the same input, made once for the three; backward again
    (retain_graph) makes it again, to the same gradients."""
    torch.manual_seed(2)
    layers = [nn.Linear(8, 4) for _ in range(3)]
    x = torch.randn(5, 8, requires_grad=True)
    made = []

    def make() -> torch.Tensor:
        made.append(1)
        return torch.tanh(x.detach())

    h = torch.tanh(x)
    with recomputed(h, make):
        loss = sum(layer(h).square().sum() for layer in layers)
    assert isinstance(loss, torch.Tensor)
    loss.backward(retain_graph=True)
    first = [layer.weight.grad.clone() for layer in layers]  # type: ignore[union-attr]
    assert len(made) == 1  # once for the three layers
    for layer in layers:
        layer.zero_grad()
    loss.backward()
    assert len(made) > 1
    for layer, grad in zip(layers, first, strict=True):
        assert torch.equal(layer.weight.grad, grad)  # type: ignore[arg-type]
    reference = sum(layer(torch.tanh(x)).square().sum() for layer in layers)
    assert isinstance(reference, torch.Tensor)
    expected = torch.autograd.grad(reference, [layer.weight for layer in layers])
    assert all(torch.equal(a, b) for a, b in zip(first, expected, strict=True))
