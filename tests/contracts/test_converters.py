"""Every model converter in `CONVERTERS`: converting a model and re-applying its record
(through JSON, as converters.json keeps it) to a freshly built one gives the same
state-dict layout, and once the weights are loaded the same outputs; a converter in
record-only mode leaves the model it comes with as it is and records the same; a
post-optimizer-step hook, where a converter has one, runs after each of the trainer's steps.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import hone.engine.backends  # noqa: F401  (registers the int8 converter)
from hone.compress.structured import StructuredPruner
from hone.config import load_config
from hone.engine import Trainer
from hone.engine.int8 import Int8
from hone.finetune.lora import LoRA
from hone.models.converters import (
    CONVERTERS,
    LowRank,
    MagnitudePrune,
    ModelConverter,
    PrunedShapes,
    apply_converters,
    convert_model,
    post_optimizer_steps,
    size_attributes,
    tensor_shapes,
)

FEATURES, CLASSES = 16, 4


def build(seed: int) -> nn.Module:
    """The architecture every converter is tried on, its weights drawn from `seed`."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, CLASSES)
    )


def inputs() -> torch.Tensor:
    return torch.randn(8, FEATURES, generator=torch.Generator().manual_seed(1))


# The converters that convert a model themselves, as each is tried.
CONVERTERS_TRIED: dict[str, Callable[[], ModelConverter]] = {
    "low_rank": lambda: LowRank(rank=4),
    "unstructured_prune": lambda: MagnitudePrune(0.5),
    "int8": lambda: Int8("torch"),
    "lora": lambda: LoRA(rank=4, targets=["0", "2"]),  # the Sequential's first two layers
}


def converted(name: str, model: nn.Module) -> tuple[nn.Module, ModelConverter]:
    """`model` converted by a converter of `name`, and that converter."""
    if name == "structured_prune":  # Torch-Pruning prunes; the converter records the shapes
        shapes, sizes = tensor_shapes(model), size_attributes(model)
        StructuredPruner(model, inputs()[:1], 0.5, 1).step()
        return model, PrunedShapes.between(0.5, shapes, sizes, model)
    converter = CONVERTERS_TRIED[name]()
    return converter.convert(model), converter


def layout(model: nn.Module) -> dict[str, Any]:
    """Each state-dict entry's shape (or type: torch's int8 layers keep packed weights)."""
    return {
        key: tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        for key, value in model.state_dict().items()
    }


def tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the state dict's tensors (torch's int8 layers pack theirs)."""
    return {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def test_every_registered_converter_is_tried() -> None:
    assert sorted([*CONVERTERS_TRIED, "structured_prune"]) == CONVERTERS.names()


@pytest.mark.parametrize("name", CONVERTERS.names())
def test_the_record_rebuilds_the_converted_model(name: str) -> None:
    model, converter = converted(name, build(0))
    record = json.loads(json.dumps(converter.record()))
    assert record["name"] == name
    fresh = apply_converters(build(1), [record])
    assert layout(fresh) == layout(model)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(inputs()), model(inputs()), rtol=0, atol=0)


@pytest.mark.parametrize("name", CONVERTERS.names())
def test_record_only_leaves_the_model_as_it_is(name: str) -> None:
    model, converter = converted(name, build(0))
    before = layout(model), tensors(model)
    same, records = convert_model(model, [converter.as_record_only()])
    assert same is model and records == [converter.record()]
    assert layout(model) == before[0]
    after = tensors(model)
    assert all(torch.equal(value, after[key]) for key, value in before[1].items())


@pytest.mark.parametrize(
    "name", [n for n in CONVERTERS_TRIED if post_optimizer_steps([CONVERTERS_TRIED[n]()])]
)
def test_the_post_step_hook_runs_after_each_step(name: str, tmp_path) -> None:
    """Trained with weight decay, which moves every weight; the hook runs after each step."""
    steps = 5
    model, converter = converted(name, build(0))
    calls: list[nn.Module] = []
    hook = converter.post_optimizer_step

    def counted(model: nn.Module) -> None:
        calls.append(model)
        hook(model)

    converter.post_optimizer_step = counted  # type: ignore[method-assign]
    x = torch.randn(64, FEATURES, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, CLASSES, (64,), generator=torch.Generator().manual_seed(3))
    cfg = load_config(
        None,
        [
            f"train.max_steps={steps}",
            "train.max_epochs=0",
            "train.batch_size=16",
            "optim.name=adamw",
            "optim.weight_decay=0.5",
            "log.tensorboard=false",
            "log.progress=off",
            "train.checkpoint_every=0",
            "train.threads=1",
        ],
    )
    trainer = Trainer(
        model,
        (x, y),
        config=cfg,
        run_dir=tmp_path / "run",
        converters=[converter.as_record_only()],
    )
    trainer.fit()
    assert len(calls) == steps and all(m is trainer.model for m in calls)
    if isinstance(converter, MagnitudePrune):  # its zeros held
        weights = {n: p for n, p in trainer.model.named_parameters()}
        for key, mask in converter.masks.items():
            assert torch.equal(weights[key] != 0, mask.to(weights[key].device)), key


def test_no_hook_costs_the_step_nothing(tmp_path) -> None:
    """Converters without a post-step hook leave the stepper's list of them empty."""
    assert post_optimizer_steps([LowRank(rank=4), Int8("torch")]) == []
    overrides = ["data.name=digits", "model.name=mlp", "train.max_steps=1"]
    cfg = load_config(None, [*overrides, "log.tensorboard=false"])
    trainer = Trainer(config=cfg, run_dir=tmp_path / "run", converters=[LowRank(rank=4)])
    assert trainer.stepper.post_step == []
    trainer.close()
