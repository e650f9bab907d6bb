"""Precision owns autocast and fp16's gradient scaler: created, stepped, checkpointed; and
resolves train.precision = 'auto' from the hardware."""

from __future__ import annotations

import json

import pytest
import torch

from hone.checkpoint import flatten, unflatten
from hone.config import TrainConfig, load_config
from hone.engine import Precision, Trainer
from hone.engine import precision as precision_module
from hone.engine.precision import inference_precision
from hone.errors import ConfigError
from hone.hardware import OVERRIDE_ENV
from hone.track import throughput
from tests.conftest import TINY_GPT_RUN

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


def test_auto_is_the_default_and_recipes_that_pin_a_precision_keep_it() -> None:
    assert TrainConfig().precision == "auto"
    assert load_config("gpt-shakespeare-baseline", []).train.precision == "fp32"
    assert load_config("gpt2-small", []).train.precision == "bf16"


@pytest.mark.parametrize(
    ("native", "name", "reason"),
    [
        ("1", "bf16", f"auto: native bf16 ({OVERRIDE_ENV}=1)"),
        ("0", "fp32", f"auto: fp32, {OVERRIDE_ENV}=0"),
    ],
)
def test_auto_resolves_to_bf16_only_with_native_bf16(
    monkeypatch: pytest.MonkeyPatch, native: str, name: str, reason: str
) -> None:
    monkeypatch.setenv(OVERRIDE_ENV, native)
    precision = Precision.from_config("auto", CPU)
    assert (precision.name, precision.reason) == (name, reason)
    assert precision.summary() == {"precision": name, "precision_reason": reason}
    # a loaded run (eval, sample, serve, compress) resolves it the same way
    assert inference_precision("auto", CPU).name == name
    # a pinned precision is kept whatever the hardware
    assert Precision.from_config("fp32", CPU).reason == "train.precision = 'fp32'"
    assert Precision.from_config("bf16", CPU).name == "bf16"


def test_auto_names_the_cpu_flags_it_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OVERRIDE_ENV, raising=False)
    monkeypatch.setattr(precision_module, "native_bf16", lambda device: True)
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert Precision.from_config("auto", CPU).reason == "auto: native bf16 (avx512_bf16)"
    monkeypatch.setattr(precision_module, "native_bf16", lambda device: False)
    assert Precision.from_config("auto", CPU).reason == "auto: fp32, no native bf16 on this CPU"


@pytest.mark.parametrize(("native", "expected"), [("0", "fp32"), ("1", "bf16")])
def test_the_summary_of_a_run_names_the_precision_auto_picked(
    tmp_path, monkeypatch: pytest.MonkeyPatch, native: str, expected: str
) -> None:
    monkeypatch.setenv(OVERRIDE_ENV, native)
    overrides = ["data.name=digits", "model.name=mlp", "train.max_steps=2", "log.tensorboard=false"]
    summary = Trainer(config=load_config(None, overrides), run_dir=tmp_path / "run").fit()
    assert summary["precision"] == expected
    assert (
        summary["precision_reason"].startswith("auto: ")
        and OVERRIDE_ENV in summary["precision_reason"]
    )
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["precision"] == expected


def test_a_language_model_measures_its_peak_in_the_precision_auto_picked(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OVERRIDE_ENV, "1")
    monkeypatch.setenv("HONE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(throughput, "MEASURE_SECONDS", 0.05)
    monkeypatch.setattr(throughput, "MATMUL_SIZE", 128)
    overrides = [
        *TINY_GPT_RUN,
        "train.precision=auto",  # the recipe pins fp32 (through its base)
        "train.max_steps=2",
        "log.every=1",
        "log.tensorboard=false",
    ]
    summary = Trainer(
        config=load_config("gpt-shakespeare-char", overrides), run_dir=tmp_path / "run"
    ).fit()
    assert summary["precision"] == "bf16"
    # the peak MFU was measured against is bf16's, and the summary says where it came from
    assert summary["peak_flops"] > 0 and "bfloat16" in summary["peak_source"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_training_on_cuda_has_a_scaler_in_its_checkpoints(tmp_path) -> None:
    overrides = [
        "data.name=digits", "model.name=mlp", "train.max_steps=20", "train.device=cuda",
        "train.precision=fp16", "train.checkpoint_every=10", "log.tensorboard=false",
    ]  # fmt: skip
    trainer = Trainer(config=load_config(None, overrides), run_dir=tmp_path / "run")
    assert trainer.precision.scaler is not None
    summary = trainer.fit()
    assert summary["steps"] == 20
    resumed = Trainer(config=load_config(None, [*overrides[:2], "train.max_steps=30", *overrides[3:]]),
                      run_dir=tmp_path / "run", resume=True)  # fmt: skip
    assert resumed.precision.state_dict() == trainer.precision.state_dict()
