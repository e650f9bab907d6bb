"""Training statistics and the NaN probe: the numbers in stats.jsonl are the model's own."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from hone.config import load_config
from hone.engine import Trainer
from hone.engine.stats import StatsFile
from hone.errors import TrainingAborted

DIGITS = [
    "data.name=digits",
    "model.name=mlp",
    "model.depth=2",
    "model.width=32",
    "model.dropout=0",
    "train.batch_size=64",
    "train.max_epochs=0",
    "train.max_steps=40",
    "log.tensorboard=false",
    "log.progress=off",
    "log.stats_every=10",
]


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def test_a_run_records_its_statistics_at_the_first_step_and_every_n(tmp_path) -> None:
    Trainer(config=load_config("mlp-digits", DIGITS), run_dir=tmp_path).fit()
    run, *layers = records(tmp_path)
    assert run["kind"] == "run" and run["task"] == "classification"
    assert run["uniform_loss"] == pytest.approx(math.log(10))
    # A fresh network predicts about uniformly: its step-0 loss is near ln 10.
    assert abs(run["initial_loss"] - math.log(10)) < 0.3
    assert run["input_scale"]["normalize"] == "standard"
    assert run["input_scale"]["std_max"] == pytest.approx(1.0, abs=0.2)
    assert [r["step"] for r in layers] == [1, 10, 20, 30, 40]
    # Every step's loss is in exactly one record.
    assert sum(len(r["losses"]) for r in layers) == 40
    last = layers[-1]
    kinds = [row["type"] for row in last["layers"]]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]  # forward order
    for row in last["layers"]:
        if row["type"] == "Linear":
            assert row["grad_norm"] > 0 and row["weight_norm"] > 0 and 0 < row["update_ratio"] < 1
        else:
            assert 0 <= row["dead_fraction"] < 0.5  # a healthy ReLU layer
            assert row["act_mean"] > 0  # ReLU outputs are non-negative
    assert -1 <= last["grad_cosine"] <= 1 and last["lr"] > 0


def test_update_ratio_and_gradient_norm_are_the_optimizer_step(tmp_path) -> None:
    """Plain SGD moves the weights by lr * gradient: the recorded ratio must say so."""
    cfg = load_config(
        "linreg",
        ["optim.name=sgd", "optim.lr=0.01", "train.max_steps=5", "train.max_epochs=0",
         "log.stats_every=5", "log.tensorboard=false", "log.progress=off"],
    )  # fmt: skip
    Trainer(config=cfg, run_dir=tmp_path).fit()
    for record in records(tmp_path)[1:]:
        (row,) = record["layers"]
        expected = 0.01 * row["grad_norm"] / row["weight_norm"]
        assert row["update_ratio"] == pytest.approx(expected, rel=1e-4)


class Shifted(nn.Module):
    """Linear, a fixed shift, then the activation: the shift decides the units' fate."""

    def __init__(self, activation: nn.Module, shift: float) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 16)
        self.shift = shift
        self.act = activation
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.linear(x.flatten(1)) + self.shift))


@pytest.mark.parametrize(
    ("activation", "shift", "key", "expected"),
    [(nn.ReLU(), -100.0, "dead_fraction", 1.0), (nn.Tanh(), 50.0, "saturated_fraction", 1.0),
     (nn.ReLU(), 100.0, "dead_fraction", 0.0), (nn.Tanh(), 0.0, "saturated_fraction", 0.0)],
)  # fmt: skip
def test_dead_and_saturated_units_are_counted(tmp_path, activation, shift, key, expected) -> None:
    torch.manual_seed(0)
    model = Shifted(activation, shift)
    with torch.no_grad():
        model.linear.weight.mul_(0.01)  # pre-activations are the shift, give or take 0.1
    cfg = load_config("mlp-digits", [*DIGITS, "train.max_steps=1"])
    Trainer(config=cfg, run_dir=tmp_path, model=model).fit()
    (row,) = [r for r in records(tmp_path)[1]["layers"] if r["name"] == "act"]
    assert row[key] == pytest.approx(expected, abs=1e-6)


class Overflow(nn.Module):
    """Overflows float32 on every non-zero input: the origin the probe must find."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1e38 * 1e38


def test_the_nan_probe_names_the_module_where_the_non_finite_began(tmp_path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), Overflow(), nn.Linear(8, 10))
    cfg = load_config("mlp-digits", [*DIGITS, "train.max_bad_steps=2", "train.max_rollbacks=0"])
    with pytest.raises(TrainingAborted):
        Trainer(config=cfg, run_dir=tmp_path, model=model).fit()
    probes = [r for r in records(tmp_path) if r["kind"] == "non_finite"]
    assert probes, "no probe record"
    assert probes[0]["origin"] == "module" and probes[0]["name"] == "2"
    assert probes[0]["type"] == "Overflow" and probes[0]["trend"] == "jumped"


def test_statistics_off_writes_no_file_and_a_resume_drops_redone_steps(tmp_path) -> None:
    Trainer(
        config=load_config("mlp-digits", [*DIGITS, "log.stats_every=0"]), run_dir=tmp_path / "off"
    ).fit()
    assert not (tmp_path / "off" / "stats.jsonl").exists()
    path = tmp_path / "stats.jsonl"
    path.write_text("".join(json.dumps({"step": s, "kind": "layers"}) + "\n" for s in (1, 10, 20)))
    path.write_text(path.read_text() + '{"step": 30, "ki')  # a line cut short by a kill
    file = StatsFile(path)
    file.open(resumed_step=10)
    file.write({"step": 11, "kind": "layers"})
    file.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 10, 11]
