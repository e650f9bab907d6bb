"""What a model builder gets: its config section and the shape of the data it will see."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from hone.config import ModelConfig
from hone.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """The data's side of a model's shape."""

    task: str  # regression | classification | binary | lm
    input_shape: tuple[int, ...]  # per sample, e.g. (64,) or (1, 28, 28); (block_size,) for lm
    num_outputs: int  # classes, 1 for binary, target width for regression, vocab for lm
    vocab_size: int = 0


MODELS: Registry[Callable[[ModelConfig, ModelSpec], nn.Module]] = Registry("model", "model.name")


def weight_flops(model: nn.Module, lookups: Iterable[torch.Tensor] = ()) -> float:
    """Training FLOPs per token of the weights that multiply each token: 6 a weight that
    trains (2 forward, 2 for the input's gradient, 2 for its own), 4 a frozen one, which
    has no gradient of its own to compute (a LoRA run's base: counted as 6, its MFU read
    1.5x too high and outran the measured peak). A tied weight counts once; `lookups`
    (embedding tables read, not multiplied) not at all; a frozen weight a module keeps
    outside its parameters (a 4-bit base) through the module's `frozen_numel()`."""
    skip = {id(p) for p in lookups}
    total = 0.0
    for param in model.parameters():
        if id(param) not in skip:
            total += (6.0 if param.requires_grad else 4.0) * param.numel()
    for module in model.modules():
        frozen_numel = getattr(module, "frozen_numel", None)
        if callable(frozen_numel):
            total += 4.0 * frozen_numel()
    return total
