"""The quickstart notebook's network (examples/quickstart.ipynb), in a module of its own.

A model class that lives in an importable module is recorded with the run ("quicknet:QuickNet"
and its constructor arguments), so that `hone eval`, `serve`, `export` and `compress` can build
it again in another process; one defined in a notebook cell still trains, and `hone doctor`
and `hone report` still read its run.
"""

from __future__ import annotations

import torch
from torch import nn


class QuickNet(nn.Module):
    """A small MLP for 8x8 digit images: 64 pixels -> `hidden` -> 10 class scores."""

    def __init__(self, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        # Kept under the arguments' names: hone records them with the run, to build it again.
        self.hidden, self.dropout = hidden, dropout
        self.layers = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (B, 64) -> logits (B, 10)
