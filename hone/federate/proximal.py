"""FedProx's proximal term: the client's loss plus mu/2 times its squared distance to the
global weights it started the round from (Li et al., 2020, "Federated Optimization in
Heterogeneous Networks"). It keeps a client on skewed data from wandering far from the
model the others are averaging into.

A loss wrapper, handed to the trainer like any loss (`Trainer(loss=...)`): the training
loop is the trainer's own, and the term's gradient mu * (w - w_global) flows through the
same backward pass, clipping and NaN guard as the data loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class ProximalLoss:
    """`base(outputs, targets) + mu / 2 * sum ||w - w_global||^2` over the trainable weights.

    `anchor(model)` records the weights the round starts from (the global ones); it must be
    called after they are loaded and before the first step.
    """

    def __init__(self, base: Callable[..., torch.Tensor], mu: float) -> None:
        self.base, self.mu = base, mu
        self.params: list[nn.Parameter] = []
        self.anchors: list[torch.Tensor] = []

    def anchor(self, model: nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.anchors = [p.detach().clone() for p in self.params]

    def distance(self) -> torch.Tensor:
        """Squared L2 distance of the weights to their anchors (a graph for backward)."""
        assert self.params, "ProximalLoss.anchor(model) was not called"
        return torch.stack(
            [(p - a).pow(2).sum() for p, a in zip(self.params, self.anchors, strict=True)]
        ).sum()

    def __call__(
        self, outputs: torch.Tensor, targets: torch.Tensor, *rest: torch.Tensor
    ) -> torch.Tensor:
        return self.base(outputs, targets, *rest) + 0.5 * self.mu * self.distance()
