"""Precision owns autocast and fp16's gradient scaler: created, stepped, checkpointed."""

from __future__ import annotations

import pytest
import torch

from hone.checkpoint import flatten, unflatten
from hone.config import load_config
from hone.engine import Precision, Trainer
from hone.errors import ConfigError

CPU = torch.device("cpu")


def _problem() -> tuple[torch.nn.Linear, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_fp16_has_a_scaler_that_skips_overflowing_steps_and_backs_off() -> None:
    precision = Precision("fp16", CPU)  # the object itself works on any device
    assert precision.scaler is not None and precision.checks_gradients
    model, optimizer = _problem()
    scale = precision.scaler.get_scale()
    loss = model(torch.ones(2, 4)).pow(2).mean()
    precision.backward(loss)
    # the gradients were computed on the scaled loss, and unscaled before the step
    precision.unscale(optimizer)
    expected = torch.autograd.grad(model(torch.ones(2, 4)).pow(2).mean(), model.weight)[0]
    torch.testing.assert_close(model.weight.grad, expected)
    before = model.weight.detach().clone()
    assert precision.step(optimizer) and not torch.equal(model.weight, before)
    optimizer.zero_grad()
    # an overflow: the step is skipped and the scale halves
    precision.backward(model(torch.full((2, 4), float("inf"))).sum())
    before = model.weight.detach().clone()
    assert not precision.step(optimizer)
    assert torch.equal(model.weight, before) and precision.scaler.get_scale() == scale / 2


def test_the_scaler_state_round_trips_through_a_checkpoint() -> None:
    precision = Precision("fp16", CPU)
    model, optimizer = _problem()
    precision.backward(model(torch.full((2, 4), float("inf"))).sum())
    precision.step(optimizer)
    tree, tensors = flatten(precision.state_dict())
    restored = Precision("fp16", CPU)
    restored.load_state_dict(unflatten(tree, tensors))
    assert restored.state_dict() == precision.state_dict()
    assert restored.scaler is not None and restored.scaler.get_scale() == 2.0**15


def test_fp32_and_bf16_need_no_scaler_and_bf16_autocasts() -> None:
    assert Precision("fp32", CPU).scaler is None and Precision("fp32", CPU).state_dict() == {}
    bf16 = Precision("bf16", CPU)
    assert bf16.scaler is None
    with bf16.autocast():
        assert (
            torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
        )


def test_fp16_off_cuda_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="--train.precision=bf16"):
        Precision.from_config("fp16", CPU)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_training_on_cuda_has_a_scaler_in_its_checkpoints(tmp_path) -> None:
    overrides = [
        "data.name=digits", "model.name=mlp", "train.max_steps=20", "train.device=cuda",
        "train.precision=fp16", "train.checkpoint_every=10", "log.tensorboard=false",
    ]  # fmt: skip
    trainer = Trainer(load_config(None, overrides), tmp_path / "run")
    assert trainer.precision.scaler is not None
    summary = trainer.fit()
    assert summary["steps"] == 20
    resumed = Trainer(load_config(None, [*overrides[:2], "train.max_steps=30", *overrides[3:]]),
                      tmp_path / "run", resume=True)  # fmt: skip
    assert resumed.precision.state_dict() == trainer.precision.state_dict()
