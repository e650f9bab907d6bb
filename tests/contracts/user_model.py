"""A user model factory for the `custom` model's contract (model.target = this module:factory)."""

from __future__ import annotations

import math

from torch import nn

from hone.models import ModelSpec


def factory(spec: ModelSpec, hidden: int = 8) -> nn.Module:
    """A small network for any task: token ids (B, T) -> (B, T, V), else (B, ...) -> (B, outputs)."""
    if spec.task == "lm":
        return nn.Sequential(
            nn.Embedding(spec.vocab_size, hidden), nn.Linear(hidden, spec.num_outputs)
        )
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(spec.input_shape), hidden),
        nn.Tanh(),
        nn.Linear(hidden, spec.num_outputs),
    )
