"""State <-> safetensors + JSON: exact round trips for every optimizer, RNGs and odd values."""

from __future__ import annotations

import copy
import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from hone.checkpoint import (
    flatten,
    load_optimizer,
    rng_state,
    save_optimizer,
    set_rng_state,
    unflatten,
)
from hone.config import OptimConfig
from hone.optim import OPTIMIZERS, build_optimizer, optimizer_kind


def test_flatten_round_trips_odd_values() -> None:
    value = {
        "ints": {0: 1, 7: (2, 3.5)},
        "floats": [math.inf, -math.inf, 0.1, 1e-300],
        "none": None,
        "flags": (True, False),
        "tensor": torch.arange(6, dtype=torch.float64).reshape(2, 3),
        "bf16": torch.tensor([1.5], dtype=torch.bfloat16),
        "array": np.arange(5, dtype=np.uint32),
        "__hone_tensor__": "a user key that looks like a tag",
    }
    tree, tensors = flatten(value)
    text = json.dumps(tree, allow_nan=False)  # standard JSON: no NaN/Infinity literals
    back = unflatten(json.loads(text), tensors)
    assert back["ints"] == {0: 1, 7: (2, 3.5)}
    assert back["floats"] == value["floats"] and back["flags"] == (True, False)
    assert back["none"] is None
    assert torch.equal(back["tensor"], value["tensor"]) and back["bf16"].dtype == torch.bfloat16
    assert back["array"].dtype == np.uint32 and (back["array"] == np.arange(5)).all()
    assert back["__hone_tensor__"] == value["__hone_tensor__"]
    nan_tree, _ = flatten(float("nan"))
    assert math.isnan(unflatten(json.loads(json.dumps(nan_tree)), {}))


def test_flatten_copies_tensors_sharing_storage() -> None:
    base = torch.arange(4.0)
    tree, tensors = flatten({"a": base, "b": base[1:], "c": base.view(2, 2).t()})
    from safetensors.torch import load, save

    back = unflatten(tree, load(save(tensors)))
    assert torch.equal(back["b"], base[1:]) and torch.equal(back["c"], base.view(2, 2).t())


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))


def _step(name: str, model: nn.Module, opt: torch.optim.Optimizer, x, y) -> None:
    kind = optimizer_kind(name)

    def loss_fn(params=None):
        if params is None:
            return ((model(x) - y) ** 2).mean()
        names = [n for n, _ in model.named_parameters()]
        out = torch.func.functional_call(model, dict(zip(names, params, strict=True)), (x,))
        return ((out - y) ** 2).mean()

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    if kind.functional:
        opt.step(closure, loss_fn=loss_fn)
    elif kind.closure:
        opt.step(closure)
    else:
        closure()
        opt.step()


OPTIMIZER_CASES = [
    ("gd", {}),
    ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("adam", {}),
    ("adamw", {"weight_decay": 0.1}),
    ("adagrad", {}),
    ("rmsprop", {"momentum": 0.5}),
    ("lbfgs", {"lr": 1.0}),
    ("newton", {"lr": 1.0, "damping": 1.0}),
    ("muon", {}),
]


def test_every_optimizer_is_covered() -> None:
    assert sorted(OPTIMIZERS.names()) == sorted(name for name, _ in OPTIMIZER_CASES)


@pytest.mark.parametrize(("name", "kwargs"), OPTIMIZER_CASES)
def test_optimizer_state_round_trips_exactly(tmp_path, name: str, kwargs: dict) -> None:
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    y = x.sum(1, keepdim=True).sin()
    cfg = OptimConfig(name=name, **{"lr": 0.01, **kwargs})
    model = _model()
    opt = build_optimizer(cfg, model, torch.device("cpu"))
    for _ in range(3):
        _step(name, model, opt, x, y)
    twin = copy.deepcopy(model)
    twin_opt = build_optimizer(cfg, twin, torch.device("cpu"))
    save_optimizer(opt, tmp_path)
    load_optimizer(twin_opt, tmp_path)
    assert not list(tmp_path.glob("*.pt")) and json.loads((tmp_path / "optimizer.json").read_text())
    for _ in range(2):  # the restored optimizer continues exactly where the original was
        _step(name, model, opt, x, y)
        _step(name, twin, twin_opt, x, y)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b), name
    _, ta = flatten(opt.state_dict())
    _, tb = flatten(twin_opt.state_dict())
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_rng_state_round_trips() -> None:
    state = rng_state()
    tree, tensors = flatten(state)
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(unflatten(json.loads(json.dumps(tree)), tensors))
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])
