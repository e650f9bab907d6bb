"""Contract tests: every registered optimizer, built from the config, reduces a small loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from hone.config import OptimConfig
from hone.errors import ConfigError
from hone.optim import OPTIMIZERS, build_optimizer, optimizer_kind

CPU = torch.device("cpu")

# Per optimizer: config overrides and steps, so that each gets a fair few dozen steps.
SETTINGS: dict[str, tuple[dict, int]] = {
    "gd": ({"lr": 0.1}, 40),
    "sgd": ({"lr": 0.05, "momentum": 0.9, "nesterov": True}, 40),
    "adam": ({"lr": 0.02}, 40),
    "adamw": ({"lr": 0.02, "weight_decay": 0.01}, 40),
    "adagrad": ({"lr": 0.1}, 40),
    "rmsprop": ({"lr": 0.005, "momentum": 0.5}, 40),
    "lbfgs": ({"lr": 1.0, "max_iter": 5}, 5),
    "newton": ({"lr": 1.0, "damping": 3.0}, 8),  # damped: the MLP's Hessian is indefinite
    "muon": ({"lr": 0.02, "muon_lr": 0.02}, 40),
}


def regression_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny MLP (113 parameters) and a smooth nonlinear target."""
    torch.manual_seed(0)
    x = torch.randn(128, 5)
    y = torch.sin(x @ torch.randn(5, 1)) + 0.1 * x[:, :1]
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))
    return model, x, y


def train(name: str, overrides: dict, steps: int) -> tuple[float, float]:
    """(loss before, loss after) `steps` full-batch steps, driven as the engine drives them."""
    model, x, y = regression_problem()
    optimizer = build_optimizer(OptimConfig(name=name, **overrides), model, CPU)
    kind = optimizer_kind(name)
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    def loss_fn(params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        out = torch.func.functional_call(model, dict(zip(names, params, strict=True)), (x,))
        return nn.functional.mse_loss(out, y)

    with torch.no_grad():
        before = nn.functional.mse_loss(model(x), y).item()
    for _ in range(steps):
        if kind.functional:
            optimizer.step(closure, loss_fn=loss_fn)
        elif kind.closure:
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
    with torch.no_grad():
        after = nn.functional.mse_loss(model(x), y).item()
    return before, after


def test_every_optimizer_has_settings() -> None:
    assert sorted(SETTINGS) == OPTIMIZERS.names()


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_optimizer_reduces_loss(name: str) -> None:
    overrides, steps = SETTINGS[name]
    before, after = train(name, overrides, steps)
    assert after < 0.5 * before, (name, before, after)


def test_kinds() -> None:
    assert optimizer_kind("gd").full_batch and not optimizer_kind("gd").closure
    assert optimizer_kind("lbfgs").closure and not optimizer_kind("lbfgs").functional
    assert optimizer_kind("newton").functional and optimizer_kind("newton").full_batch
    assert not optimizer_kind("adamw").full_batch


def test_weight_decay_and_impl_reach_torch() -> None:
    model, _, _ = regression_problem()
    cfg = OptimConfig(name="adamw", weight_decay=0.05, impl="single")
    group = build_optimizer(cfg, model, CPU).param_groups[0]
    assert group["weight_decay"] == 0.05 and group["foreach"] is False
    assert build_optimizer(OptimConfig(name="adam"), model, CPU).param_groups[0]["fused"]
    assert build_optimizer(OptimConfig(name="sgd", impl="fused"), model, CPU).defaults["fused"]


def test_unknown_optimizer_lists_names() -> None:
    model, _, _ = regression_problem()
    with pytest.raises(ConfigError, match="adagrad, adam, adamw, gd, lbfgs, muon, newton"):
        build_optimizer(OptimConfig(name="adamm"), model, CPU)
    with pytest.raises(ConfigError, match="optim.name"):
        optimizer_kind("nope")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "sgd", "nesterov": True, "momentum": 0.0}, "optim.momentum must be > 0"),
        ({"name": "gd", "momentum": 0.9}, "optim.momentum applies to optim.name = 'rmsprop' or"),
        ({"name": "adam", "betas": [0.9]}, "optim.betas must be two numbers"),
        ({"name": "rmsprop", "impl": "fused"}, "optim.impl='fused' needs"),
        ({"name": "lbfgs", "weight_decay": 0.1}, "set --reg.l2=0.1"),
        ({"name": "newton", "weight_decay": 0.1}, "optim.weight_decay must be 0"),
    ],
)
def test_bad_settings_raise_config_error(overrides: dict, message: str) -> None:
    model, _, _ = regression_problem()
    with pytest.raises(ConfigError, match=message):
        build_optimizer(dataclasses.replace(OptimConfig(), **overrides), model, CPU)


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
]


@pytest.mark.parametrize("device_type", DEVICES)
@pytest.mark.parametrize("name", ["adamw", "muon", "newton"])
def test_one_step_on_device(name: str, device_type: str) -> None:
    device = torch.device(device_type)
    model, x, y = regression_problem()
    model, x, y = model.to(device), x.to(device), y.to(device)
    own = {"damping": 3.0} if name == "newton" else {}
    cfg = OptimConfig(name=name, lr=1.0 if name == "newton" else 0.01, **own)
    optimizer = build_optimizer(cfg, model, device)
    assert optimizer.param_groups[-1].get("fused", name != "adamw")  # auto: fused AdamW
    names = [n for n, _ in model.named_parameters()]

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    def loss_fn(params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        out = torch.func.functional_call(model, dict(zip(names, params, strict=True)), (x,))
        return nn.functional.mse_loss(out, y)

    before = closure().item()
    if name == "newton":
        optimizer.step(closure, loss_fn=loss_fn)
    else:
        optimizer.step()
    with torch.no_grad():
        assert nn.functional.mse_loss(model(x), y).item() < before


def test_weight_decay_spares_biases_and_norms() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    optimizer = build_optimizer(
        OptimConfig(name="adamw", weight_decay=0.1), model, torch.device("cpu")
    )
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
