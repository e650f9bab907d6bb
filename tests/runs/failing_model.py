"""A user model that fails on purpose after a few training steps, for the status tests
(model.name=custom, model.target=tests.runs.failing_model:factory)."""

from __future__ import annotations

import math

import torch
from torch import nn

from hone.models import ModelSpec


class Failing(nn.Module):
    """A linear model whose training forward passes go wrong after `after` of them: an
    exception ("raise"), or a NaN output that the NaN guard skips until it gives up ("nan")."""

    def __init__(self, spec: ModelSpec, after: int, mode: str) -> None:
        super().__init__()
        self.linear = nn.Linear(math.prod(spec.input_shape), spec.num_outputs)
        self.after, self.mode, self.calls = after, mode, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls > self.after and self.mode == "raise":
                raise RuntimeError(f"failing on purpose at forward pass {self.calls}")
            if self.calls > self.after:
                return self.linear(x) * math.nan
        return self.linear(x)


def factory(spec: ModelSpec, after: int = 5, mode: str = "raise") -> nn.Module:
    return Failing(spec, after, mode)
