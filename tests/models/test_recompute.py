"""hone.models.recompute: what the blocks keep for backward as recipes is freed after the
forward, and backward gives the very gradients of a model that keeps it."""

from __future__ import annotations

import contextlib
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hone.config import ModelConfig
from hone.models import ModelSpec, build_model
from hone.models.gpt import GPT
from hone.models.recompute import recomputed

VOCAB = 17


def keep(t: torch.Tensor) -> torch.Tensor:
    return t


def gpt(**overrides: object) -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(name="gpt", n_layer=2, n_head=2, n_embd=16, block_size=12)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    model = build_model(cfg, ModelSpec("lm", (cfg.block_size,), VOCAB, vocab_size=VOCAB))
    assert isinstance(model, GPT)
    return model.train()


@pytest.mark.parametrize(
    "options", [{"mlp": "gelu", "norm": "layernorm"}, {"mlp": "relu2", "norm": "rmsnorm"}]
)
def test_a_gpt_block_keeps_neither_normed_inputs_nor_the_activation(
    options: dict[str, object],
) -> None:
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    grads = []
    for keep_all in (False, True):
        model = gpt(**options)
        watched: list[weakref.ref[torch.Tensor]] = []

        def output(m: nn.Module, i: object, out: torch.Tensor, into: list = watched) -> None:
            into.append(weakref.ref(out))

        def first_input(m: nn.Module, i: tuple[torch.Tensor], into: list = watched) -> None:
            into.append(weakref.ref(i[0]))

        for block in model.blocks:
            for module in (block.norm1, block.norm2):  # their outputs
                module.register_forward_hook(output)
            block.mlp.proj.register_forward_pre_hook(first_input)  # the activation
        with contextlib.ExitStack() as stack:
            if keep_all:  # any outer saved-tensor hooks turn the recipes off
                stack.enter_context(torch.autograd.graph.saved_tensors_hooks(keep, keep))
            loss = F.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
        alive = sum(ref() is not None for ref in watched)
        assert len(watched) == 3 * len(model.blocks)
        assert alive == (len(watched) if keep_all else 0)
        loss.backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(a is not None and torch.equal(a, b) for a, b in zip(*grads, strict=True))


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
