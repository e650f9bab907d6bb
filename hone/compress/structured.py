"""Structured pruning with Torch-Pruning: whole units, channels and attention heads go, so the
matrices shrink.

Torch-Pruning traces the model on one real input and groups the weights that must shrink
together (a hidden unit is a row of one layer's weight and bias and a column of the next
layer's). Each group loses its units of smallest L2 norm, the same share in every layer
(local ranking: the widths then depend on the ratio and the graph, not on the weights).
Fixed: the output layer (its width is the task's) and the embeddings (in a transformer their
width is the residual stream, which every block reads and writes and the output layer may
share). Attention heads go whole, q, k and v together, so each keeps its width; the attention
module is told its new head count.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from hone.errors import ConfigError
from hone.models.converters import CHANNEL_LAYERS
from hone.models.gpt import CausalSelfAttention


def fixed_layers(model: nn.Module) -> list[nn.Module]:
    """What keeps its width: the output layer (the last linear or convolution registered)
    and every embedding table."""
    channel_layers: list[nn.Module] = [m for m in model.modules() if isinstance(m, CHANNEL_LAYERS)]
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    return [*channel_layers[-1:], *embeddings]


def heads_to_remove(heads: int, ratio: float, step: int, steps: int) -> int:
    """Heads of an attention layer with `heads` heads at the start that step `step` of
    `steps` removes, so that the last leaves round((1 - ratio) x heads), at least one."""
    total = min(heads - 1, round(ratio * heads))
    return round(total * step / steps) - round(total * (step - 1) / steps)


class StructuredPruner:
    """Prunes `model` in place, in `steps` equal steps, to about 1 - `ratio` of each prunable
    width (and of the heads of each attention layer); `example` is one real input."""

    def __init__(self, model: nn.Module, example: torch.Tensor, ratio: float, steps: int) -> None:
        self.model, self.example, self.ratio, self.steps = model, example, ratio, steps
        self.attention = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
        self.initial_heads = [a.n_head for a in self.attention]
        self.done = 0

    def step(self) -> None:
        """The next step: a share of the widths the model has now, chosen so that step i
        leaves 1 - ratio x i / steps of the original widths."""
        import torch_pruning as tp  # type: ignore[import-untyped]

        i, ratio, steps = self.done + 1, self.ratio, self.steps
        share = 1 - (1 - ratio * i / steps) / (1 - ratio * (i - 1) / steps)
        head_shares = {}
        for attention, heads in zip(self.attention, self.initial_heads, strict=True):
            removed = heads_to_remove(heads, ratio, i, steps)
            # Torch-Pruning removes ceil(share x heads) heads: - 0.5 keeps float error out.
            head_shares[attention.qkv] = (removed - 0.5) / attention.n_head if removed else 0.0
        self.model.to(self.example.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its notes on layers it leaves alone
            pruner = tp.pruner.MetaPruner(
                self.model,
                self.example,
                importance=tp.importance.MagnitudeImportance(p=2),
                pruning_ratio=share,
                ignored_layers=fixed_layers(self.model),
                num_heads={a.qkv: a.n_head for a in self.attention},
                prune_num_heads=bool(self.attention),
                prune_head_dims=False,
                head_pruning_ratio_dict=head_shares,
            )
            pruner.step()
        for attention in self.attention:
            attention.n_head = pruner.num_heads[attention.qkv]
        self.done = i


def check_structured(model: nn.Module, example: torch.Tensor, ratio: float) -> None:
    """Prune `model` (a copy: it is changed) once by `ratio`: a ConfigError when
    Torch-Pruning cannot, when nothing is left to remove, or when the outputs change shape."""
    name = type(model).__name__
    for attention in model.modules():
        # Torch-Pruning mis-traces rotary tables and per-head norms: it failed on both, and
        # hung on the two together, on a GPT of 4 heads.
        if isinstance(attention, CausalSelfAttention) and (
            attention.rope is not None or not isinstance(attention.q_norm, nn.Identity)
        ):
            raise ConfigError(
                "--structured cannot prune the attention heads of a GPT with model.pos = "
                "'rope' or model.qk_norm = true; drop --structured for unstructured pruning"
            )
    with torch.no_grad():
        before = model(example).shape
    parameters = sum(p.numel() for p in model.parameters())
    try:
        StructuredPruner(model, example, ratio, 1).step()
        with torch.no_grad():
            after = model(example).shape
    except Exception as error:  # whatever the tracer or the pruned forward met, in one line
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"--structured cannot prune this {name} (Torch-Pruning: {reason}); "
            "drop --structured for unstructured pruning"
        ) from None
    if after != before:
        raise ConfigError(
            f"--structured would change this {name}'s outputs from {tuple(before)} to "
            f"{tuple(after)}; drop --structured for unstructured pruning"
        )
    if sum(p.numel() for p in model.parameters()) == parameters:
        raise ConfigError(
            f"--structured found no hidden units, channels or heads to remove in this {name} "
            "(only its output layer has a width to prune); drop --structured for unstructured "
            "pruning"
        )
