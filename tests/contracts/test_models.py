"""Every model in `MODELS`: builds on a tiny spec for each task it accepts, gives outputs of the
right shape, finite values and gradients, round-trips through safetensors (tied weights
included), and refuses the other tasks with a one-line `ConfigError`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from hone.config import ModelConfig
from hone.errors import ConfigError
from hone.models import MODELS, ModelSpec, build_model

TASKS = ("regression", "classification", "binary", "lm")
BLOCK_SIZE, VOCAB_SIZE = 8, 11
# regression: a target 2 wide; classification: 3 classes; binary: one logit; lm: the vocabulary.
NUM_OUTPUTS = {"regression": 2, "classification": 3, "binary": 1, "lm": VOCAB_SIZE}
SUPERVISED = ("regression", "classification", "binary")


@dataclass(frozen=True)
class Contract:
    """What a model is checked with: a tiny config and the tasks it must build for."""

    config: dict[str, Any]  # ModelConfig fields besides the name
    tasks: tuple[str, ...]  # the tasks it accepts; it must refuse every other
    input_shape: tuple[int, ...] = (8,)  # per sample, for the supervised tasks
    tied: bool = False  # shares a parameter between modules (the GPT's embedding and head)
    refusal_bugs: dict[str, str] = field(default_factory=dict)  # task -> known bug (xfail)


CONTRACTS: dict[str, Contract] = {
    "linear": Contract({}, SUPERVISED),
    "logistic": Contract({}, ("classification", "binary")),
    "mlp": Contract({"depth": 2, "width": 16}, SUPERVISED),
    "cnn": Contract({"channels": [4, 8]}, SUPERVISED, input_shape=(1, 8, 8)),
    "gpt": Contract(
        {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": BLOCK_SIZE}, ("lm",), tied=True
    ),
    "llama": Contract(
        {"n_layer": 2, "n_head": 2, "n_kv_head": 1, "n_embd": 16, "block_size": BLOCK_SIZE},
        ("lm",),
        tied=True,
    ),
    "custom": Contract(
        {"target": "tests.contracts.user_model:factory", "kwargs": {"hidden": 8}}, TASKS
    ),
}


def contract(name: str) -> Contract:
    assert name in CONTRACTS, f"model {name!r} has no contract: add it to CONTRACTS"
    return CONTRACTS[name]


def spec(name: str, task: str) -> ModelSpec:
    if task == "lm":
        return ModelSpec(
            task="lm", input_shape=(BLOCK_SIZE,), num_outputs=VOCAB_SIZE, vocab_size=VOCAB_SIZE
        )
    return ModelSpec(
        task=task, input_shape=contract(name).input_shape, num_outputs=NUM_OUTPUTS[task]
    )


def build(name: str, task: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(name=name, **contract(name).config), spec(name, task))


def inputs(name: str, task: str, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch)
    if task == "lm":
        return torch.randint(0, VOCAB_SIZE, (batch, BLOCK_SIZE), generator=g)
    return torch.randn(batch, *contract(name).input_shape, generator=g)


def output_shape(task: str, batch: int) -> tuple[int, ...]:
    return (batch, BLOCK_SIZE, VOCAB_SIZE) if task == "lm" else (batch, NUM_OUTPUTS[task])


def tied_groups(model: nn.Module) -> list[tuple[str, ...]]:
    """Names that share one parameter, each group sorted, for every parameter shared."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return sorted(tuple(sorted(group)) for group in names.values() if len(group) > 1)


# Families that only record why a run cannot rebuild its model: they build for no task
# (tests/engine/test_recorded.py checks that they refuse with the recorded reason).
# Built from what is handed in, not from a config alone: a Python module, a checkpoint
# folder (tests/pretrained covers "pretrained" on every family it reads).
RECORD_ONLY = ("pretrained", "python")
# A model without a contract is left out here (failing the completeness test below), not
# made to break the collection of every test.
COVERED = [name for name in MODELS.names() if name in CONTRACTS]
ACCEPTED = [(name, task) for name in COVERED for task in contract(name).tasks]
REFUSED = [
    pytest.param(
        name,
        task,
        marks=[
            pytest.mark.xfail(
                raises=RuntimeError, strict=True, reason=contract(name).refusal_bugs[task]
            )
        ]
        if task in contract(name).refusal_bugs
        else [],
    )
    for name in COVERED
    for task in TASKS
    if task not in contract(name).tasks
]


def test_every_registered_model_has_a_contract() -> None:
    assert sorted([*CONTRACTS, *RECORD_ONLY]) == MODELS.names()
    # each builds for some task
    assert sorted({name for name, _ in ACCEPTED} | set(RECORD_ONLY)) == MODELS.names()
    for name in CONTRACTS:
        assert set(contract(name).tasks) <= set(TASKS), name


@pytest.mark.parametrize(("name", "task"), ACCEPTED)
def test_output_shape_and_finite_values_and_gradients(name: str, task: str) -> None:
    model = build(name, task)
    for batch in (2, 3):
        out = model(inputs(name, task, batch))
        assert out.shape == output_shape(task, batch), (name, task)
        assert out.dtype == torch.float32 and torch.isfinite(out).all(), (name, task)
    out.square().mean().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {param_name}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient for {param_name}"


@pytest.mark.parametrize(("name", "task"), ACCEPTED)
def test_safetensors_round_trip_into_a_fresh_model(name: str, task: str, tmp_path: Path) -> None:
    model = build(name, task, seed=0).eval()
    fresh = build(name, task, seed=1).eval()
    x = inputs(name, task, 3)
    with torch.no_grad():
        expected = model(x)
        assert not torch.equal(fresh(x), expected), "the seeds built equal models: a void test"
    path = tmp_path / "model.safetensors"
    save_model(model, str(path))
    missing, unexpected = load_model(fresh, str(path))
    assert not missing and not unexpected
    with torch.no_grad():
        assert torch.equal(fresh(x), expected), (name, task)
    assert tied_groups(fresh) == tied_groups(model)
    assert bool(tied_groups(model)) == contract(name).tied, tied_groups(model)


@pytest.mark.parametrize(("name", "task"), REFUSED)
def test_refuses_a_task_it_cannot_model(name: str, task: str) -> None:
    with pytest.raises(ConfigError) as refused:
        build(name, task)(inputs(name, task, 2))  # forward too: a crash there is no refusal
    message = str(refused.value)
    assert "\n" not in message and "--" in message, message  # one line naming a flag
