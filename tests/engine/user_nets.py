"""User networks that tests train and record as a user's own module would be (imported by
name: tests.engine.user_nets:MLP)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class MLP(nn.Module):
    """A tiny classifier that keeps its arguments as attributes, as most modules do."""

    def __init__(self, in_features: int, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.in_features, self.hidden, self.num_classes = in_features, hidden, num_classes
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """A residual block; its width kept under a private name."""

    def __init__(self, width: int, norm: bool = True) -> None:
        super().__init__()
        self._width = width
        self.linear = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return x + (self.norm(y) if self.norm is not None else y)


class Tower(nn.Module):
    """Modules as arguments: a stem, then blocks, then a head."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem, self.blocks, self.head = stem, nn.ModuleList(blocks), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


@dataclass
class NetConfig:
    """A config object as the argument (nanoGPT's GPT(config) style)."""

    width: int = 16
    depth: int = 2


class ConfiguredNet(nn.Module):
    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.Sequential(
            *[nn.Linear(config.width, config.width) for _ in range(config.depth)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Scaled(nn.Module):
    """Reads a tensor's value in __init__, which the meta device cannot give."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.factor = torch.tensor(scale).item() ** 0.5
        self.layer = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) * self.factor


class Forgetful(nn.Module):
    """Keeps none of its arguments: hone cannot find `hidden` on it."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.layer = nn.Linear(4, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class Misleading(nn.Module):
    """Keeps an attribute named like its argument that holds another value."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.layer = nn.Linear(4, hidden)
        self.hidden = hidden * 2  # the doubled width, not the argument

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def build_forgetful(hidden: int) -> nn.Module:
    """A factory for `Forgetful`, named by `hone_init`."""
    return Forgetful(hidden)
