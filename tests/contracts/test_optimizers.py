"""Every optimizer in `OPTIMIZERS`, driven as its `OptimizerKind` says (mini-batches or the whole
split; `step()`, `step(closure)` or `step(closure, loss_fn=...)`, as the trainer does), lowers
a tiny least-squares loss within a few dozen steps; its `state_dict()` survives
`hone.checkpoint.flatten` -> safetensors + JSON -> `unflatten`, and the reloaded optimizer
takes bit for bit the same next step."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hone.checkpoint import flatten, unflatten
from hone.config import OptimConfig
from hone.optim import OPTIMIZERS, OptimizerKind, build_optimizer, optimizer_kind

CPU = torch.device("cpu")
NUM_SAMPLES, BATCH_SIZE = 64, 16

# Per optimizer: the OptimConfig fields it is run with, and how many steps it gets.
SETTINGS: dict[str, tuple[dict[str, Any], int]] = {
    "gd": ({"lr": 0.2}, 30),
    "sgd": ({"lr": 0.05, "momentum": 0.9}, 30),
    "adam": ({"lr": 0.03}, 30),
    "adamw": ({"lr": 0.03, "weight_decay": 0.01}, 30),
    "adagrad": ({"lr": 0.1}, 30),
    "rmsprop": ({"lr": 0.01, "momentum": 0.5}, 30),
    "lbfgs": ({"lr": 1.0, "max_iter": 5}, 3),
    "newton": ({"lr": 1.0, "damping": 10.0}, 5),  # damped: the hidden layer's Hessian is indefinite
    "muon": ({"lr": 0.03, "muon_lr": 0.02}, 30),
}


def settings(name: str) -> tuple[dict[str, Any], int]:
    assert name in SETTINGS, f"optimizer {name!r} has no contract settings: add it to SETTINGS"
    return SETTINGS[name]


def problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Least squares through a tiny MLP (a hidden matrix for Muon, 49 parameters for Newton)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(NUM_SAMPLES, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [1.5]]) + 0.05 * torch.randn(
        NUM_SAMPLES, 1, generator=g
    )
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)), x, y


class Driver:
    """One optimizer step at a time, fed and called the way the trainer feeds and calls it."""

    def __init__(self, name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.kind: OptimizerKind = optimizer_kind(name)
        self.optimizer = build_optimizer(OptimConfig(name=name, **settings(name)[0]), model, CPU)
        self.model, self.x, self.y = model, x, y
        self.step_count = 0

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind.full_batch:
            return self.x, self.y
        start = self.step_count * BATCH_SIZE % NUM_SAMPLES
        return self.x[start : start + BATCH_SIZE], self.y[start : start + BATCH_SIZE]

    def step(self) -> None:
        x, y = self.batch()
        self.step_count += 1
        optimizer = self.optimizer

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=False)
            loss = nn.functional.mse_loss(self.model(x), y)
            loss.backward()
            return loss

        if self.kind.functional:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            names = {id(p): n for n, p in self.model.named_parameters()}
            keys = [names[id(p)] for p in params]

            def loss_fn(tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
                values = dict(zip(keys, tensors, strict=True))
                return nn.functional.mse_loss(
                    torch.func.functional_call(self.model, values, (x,)), y
                )

            optimizer.step(closure, loss_fn=loss_fn)  # type: ignore[call-arg]
        elif self.kind.closure:
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def full_loss(self) -> float:
        with torch.no_grad():
            return nn.functional.mse_loss(self.model(self.x), self.y).item()


def round_trip(state: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`state` written as a checkpoint writes it (safetensors + JSON) and read back."""
    tree, tensors = flatten(state)
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(json.dumps(tree, allow_nan=False))
    # Cloned, as hone.checkpoint.load_optimizer does: safetensors hands out unaligned views.
    loaded = {k: v.clone() for k, v in load_file(str(folder / "optimizer.safetensors")).items()}
    return unflatten(json.loads((folder / "optimizer.json").read_text()), loaded)


def test_every_registered_optimizer_has_settings() -> None:
    assert sorted(SETTINGS) == OPTIMIZERS.names()


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_lowers_a_least_squares_loss(name: str) -> None:
    driver = Driver(name, *problem())
    before = driver.full_loss()
    for _ in range(settings(name)[1]):
        driver.step()
    after = driver.full_loss()
    assert after < 0.5 * before, (name, before, after)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_reloaded_state_takes_the_identical_next_step(name: str, tmp_path: Path) -> None:
    model, x, y = problem()
    driver = Driver(name, model, x, y)
    for _ in range(3):
        driver.step()
    twin = Driver(name, copy.deepcopy(model), x, y)
    twin.step_count = driver.step_count
    twin.optimizer.load_state_dict(round_trip(driver.optimizer.state_dict(), tmp_path))
    tree, tensors = flatten(driver.optimizer.state_dict())
    twin_tree, twin_tensors = flatten(twin.optimizer.state_dict())
    assert twin_tree == tree and twin_tensors.keys() == tensors.keys()
    assert all(torch.equal(twin_tensors[k], tensors[k]) for k in tensors)
    for _ in range(2):
        driver.step()
        twin.step()
    for (param_name, a), b in zip(model.named_parameters(), twin.model.parameters(), strict=True):
        assert torch.equal(a, b), f"{name}: {param_name} differs after the reload"
