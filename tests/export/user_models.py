"""A user model torch.export cannot capture: its head branches on a tensor's value."""

from __future__ import annotations

import math

import torch
from torch import nn

from hone.models import ModelSpec


class SignHead(nn.Module):
    def __init__(self, features: int, outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent Python control flow: no single graph to export
            return self.linear(x)
        return -self.linear(x)


def branchy(spec: ModelSpec) -> nn.Module:
    """model.target = "tests.export.user_models:branchy": flatten, then the branching head."""
    features = math.prod(spec.input_shape)
    return nn.Sequential(nn.Flatten(), SignHead(features, spec.num_outputs))
