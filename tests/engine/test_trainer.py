"""The engine end to end, in-process: each test trains a small real model and checks numbers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hone.config import load_config
from hone.engine import Trainer
from hone.track.run import read_metrics


def fit(tmp_path, recipe: str, *overrides: str, name: str = "run"):
    cfg = load_config(recipe, ["log.tensorboard=false", *overrides])
    trainer = Trainer(config=cfg, run_dir=tmp_path / name)
    return trainer, trainer.fit()


def test_linreg_recovers_generating_weights(tmp_path) -> None:
    trainer, summary = fit(tmp_path, "linreg")
    weight = trainer.model[1].weight.detach().reshape(-1)
    bias = trainer.model[1].bias.detach().reshape(-1)
    truth = trainer.data.truth
    assert torch.allclose(
        weight, torch.tensor(truth["w_model"], dtype=weight.dtype).reshape(-1), atol=0.05
    )
    assert abs(bias.item() - float(truth["b_model"])) < 0.05
    assert summary["best_val_metric"] > 0.95  # r2


def test_newton_converges_in_three_steps(tmp_path) -> None:
    trainer, summary = fit(
        tmp_path,
        "linreg",
        "optim.name=newton",
        "optim.lr=1.0",
        "train.max_steps=3",
        "train.max_epochs=0",
        "log.every=1",
    )
    train_losses = [e["loss"] for e in read_metrics(tmp_path / "run") if e["split"] == "train"]
    assert len(train_losses) == 3
    # the first step already lands on the least-squares solution: the loss is at the noise floor
    noise_var = 0.1**2
    assert summary["final_val_loss"] < 1.5 * noise_var
    weight = trainer.model[1].weight.detach().reshape(-1)
    assert torch.allclose(
        weight,
        torch.tensor(trainer.data.truth["w_model"], dtype=weight.dtype).reshape(-1),
        atol=0.05,
    )


def test_mlp_digits_reaches_95_percent(tmp_path) -> None:
    trainer, summary = fit(tmp_path, "mlp-digits")
    assert summary["test_accuracy"] >= 0.95
    run = tmp_path / "run"
    for name in ("config.toml", "metrics.jsonl", "model.safetensors", "summary.json", "data.json"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "summary.json").read_text())
    for key in (
        "recipe",
        "steps",
        "epochs",
        "wall_seconds",
        "final_val_loss",
        "best_val_loss",
        "best_val_metric",
        "num_parameters",
        "device",
        "torch_version",
        "seed",
    ):
        assert key in saved, key
    events = read_metrics(run)
    train = [e for e in events if e["split"] == "train"]
    assert {"step", "loss", "lr", "elapsed", "epoch"} <= set(train[0])
    assert train[-1]["loss"] < train[0]["loss"]
    assert any(e["split"] == "val" and "accuracy" in e for e in events)
    weights = load_file(run / "model.safetensors")
    assert weights.keys() == trainer.model.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in trainer.model.state_dict().items())


def test_deterministic_runs_are_bit_identical(tmp_path) -> None:
    overrides = ("train.deterministic=true", "train.max_epochs=2", "model.dropout=0.2")
    a, _ = fit(tmp_path, "mlp-digits", *overrides, name="a")
    b, _ = fit(tmp_path, "mlp-digits", *overrides, name="b")
    wa, wb = (
        load_file(tmp_path / "a" / "model.safetensors"),
        load_file(tmp_path / "b" / "model.safetensors"),
    )
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c, _ = fit(tmp_path, "mlp-digits", *overrides, "train.seed=1", name="c")
    wc = load_file(tmp_path / "c" / "model.safetensors")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_early_stopping_stops(tmp_path) -> None:
    # lr so small that nothing improves by min_delta: stops after `patience` evaluations
    _, summary = fit(
        tmp_path,
        "mlp-digits",
        "optim.lr=1e-7",
        "train.patience=2",
        "train.min_delta=0.01",
        "train.max_epochs=30",
    )
    assert summary["stop_reason"] == "early_stopping"
    assert summary["epochs"] == pytest.approx(
        3, abs=1e-6
    )  # first eval sets best, then 2 without improvement


def test_l1_drives_irrelevant_weights_to_zero(tmp_path) -> None:
    # synthetic data where only the first 2 of 10 features matter: kwargs through a user data set
    overrides = (
        "data.name=custom",
        "data.target=tests.engine.sparse_data:make",
        "data.task=regression",
        "reg.l1=0.01",
        "optim.name=sgd",
        "optim.lr=0.02",
        "train.max_epochs=40",
        "model.name=linear",
        "loss.name=mse",
    )
    trainer, _ = fit(tmp_path, "linreg", *overrides)
    weight = trainer.model[1].weight.detach().reshape(-1)
    assert weight[:2].abs().min() > 0.5
    assert weight[2:].abs().max() < 0.02
    plain, _ = fit(
        tmp_path, "linreg", *[o for o in overrides if not o.startswith("reg.")], name="plain"
    )
    plain_weight = plain.model[1].weight.detach().reshape(-1)
    assert plain_weight[2:].abs().sum() > 2 * weight[2:].abs().sum()


def test_dropout_is_active_only_in_training(tmp_path) -> None:
    cfg = load_config(
        "mlp-digits",
        [
            "model.dropout=0.5",
            "log.tensorboard=false",
            "train.max_steps=1",
            "schedule.name=constant",
            "schedule.warmup_steps=0",
        ],
    )
    trainer = Trainer(config=cfg, run_dir=tmp_path / "run")
    x = trainer.data.val[0][:8]
    trainer.model.train()
    assert not torch.equal(trainer.model(x), trainer.model(x))
    trainer.model.eval()
    assert torch.equal(trainer.model(x), trainer.model(x))


def test_cross_validation_reports_k_folds(tmp_path) -> None:
    from hone.engine.cv import cross_validate

    cfg = load_config("mlp-digits", ["train.max_epochs=3", "log.tensorboard=false"])
    result = cross_validate(cfg, tmp_path / "cv", 3)
    assert len(result["best_val_metric"]) == 3
    assert all(0.8 < v <= 1 for v in result["best_val_metric"])
    assert result["best_val_metric_std"] >= 0
    assert all((tmp_path / "cv" / f"fold-{i}" / "summary.json").is_file() for i in range(3))
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["folds"] == 3


@pytest.mark.parametrize("precision", ["bf16"])
def test_bf16_autocast_trains_on_cpu(tmp_path, precision: str) -> None:
    _, summary = fit(tmp_path, "mlp-digits", f"train.precision={precision}", "train.max_epochs=5")
    assert summary["best_val_metric"] > 0.8


def test_grad_accum_matches_full_batch_step(tmp_path) -> None:
    one, _ = fit(
        tmp_path,
        "mlp-digits",
        "train.max_steps=5",
        "train.max_epochs=0",
        "train.deterministic=true",
        "model.dropout=0",
        "train.precision=fp32",  # not 'auto': bf16 rounds the two ways differently
        name="one",
    )
    acc, _ = fit(
        tmp_path,
        "mlp-digits",
        "train.max_steps=5",
        "train.max_epochs=0",
        "train.deterministic=true",
        "model.dropout=0",
        "train.grad_accum=4",
        "train.precision=fp32",
        name="acc",
    )
    for p, q in zip(one.model.parameters(), acc.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)
