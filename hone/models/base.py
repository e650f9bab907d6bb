"""What a model builder gets: its config section and the shape of the data it will see."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
