"""Newton's method: exact on quadratics, fast on logistic regression, refuses big models."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from hone.config import OptimConfig
from hone.errors import ConfigError
from hone.optim import build_optimizer

CPU = torch.device("cpu")
Forward = Callable[[torch.Tensor], torch.Tensor]


def newton_step(
    optimizer: torch.optim.Optimizer, model: nn.Module, loss_of: Callable[[Forward], torch.Tensor]
) -> float:
    """One step as the engine takes it; `loss_of(forward)` is the loss of a forward function."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model)
        loss.backward()
        return loss

    def loss_fn(params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        state = dict(zip(names, params, strict=True))
        return loss_of(lambda x: torch.func.functional_call(model, state, (x,)))

    return optimizer.step(closure, loss_fn=loss_fn).detach().item()


def test_linear_regression_solved_in_one_step() -> None:
    torch.manual_seed(0)
    x = torch.randn(200, 6)
    y = x @ torch.randn(6, 2) + 0.5 + 0.3 * torch.randn(200, 2)
    model = nn.Linear(6, 2)
    optimizer = build_optimizer(OptimConfig(name="newton", lr=1.0), model, CPU)
    newton_step(optimizer, model, lambda forward: nn.functional.mse_loss(forward(x), y))

    design = torch.cat([x, torch.ones(200, 1)], dim=1)  # (200, 7): features and the bias
    solution = torch.linalg.lstsq(design.double(), y.double()).solution  # (7, 2)
    found = torch.cat([model.weight.T, model.bias[None]]).double()
    torch.testing.assert_close(found, solution, atol=1e-4, rtol=0)


def test_logistic_regression_loss_falls_within_three_steps() -> None:
    torch.manual_seed(0)
    x = torch.randn(300, 4)
    labels = (x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.5 * torch.randn(300) > 0).float()
    model = nn.Linear(4, 1)
    optimizer = build_optimizer(OptimConfig(name="newton", lr=1.0), model, CPU)

    def loss_of(forward: Forward) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(forward(x).squeeze(1), labels)

    losses = [newton_step(optimizer, model, loss_of) for _ in range(3)]
    with torch.no_grad():
        losses.append(float(loss_of(model)))
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.5 * losses[0], losses


def test_singular_hessian_takes_the_minimum_norm_step() -> None:
    # Two identical features: the Hessian of the MSE is singular, so solve falls back to pinv,
    # which still fits the data exactly.
    torch.manual_seed(0)
    x = torch.randn(50, 1).repeat(1, 2)
    y = 3.0 * x[:, :1]
    model = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(model.weight)
    optimizer = build_optimizer(OptimConfig(name="newton", lr=1.0), model, CPU)
    newton_step(optimizer, model, lambda forward: nn.functional.mse_loss(forward(x), y))
    torch.testing.assert_close(model.weight, torch.tensor([[1.5, 1.5]]), atol=1e-4, rtol=0)


def test_too_many_parameters_is_refused() -> None:
    model = nn.Linear(100, 100)  # 10100 parameters
    with pytest.raises(ConfigError, match="the model has 10100 parameters, more than"):
        build_optimizer(OptimConfig(name="newton", max_params=5000), model, CPU)
