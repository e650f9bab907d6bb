"""A trainer that takes parts and runs in rounds: run(until=...) continues exactly; a model,
a loss, a teacher and converters handed in; the run records its converters for loading."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from hone.config import load_config
from hone.engine import LoadedRun, Trainer
from hone.losses import build_loss, distillation_loss
from hone.models import ModelSpec, build_model
from hone.models.converters import LowRank

DIGITS = [
    "data.name=digits",
    "model.name=mlp",
    "model.depth=1",
    "model.width=64",
    "train.batch_size=64",
    "train.eval_every=10",
    "log.every=10",
    "log.tensorboard=false",
]


def config(*overrides: str):
    # a fixed thread count: train.threads=auto may time other counts, and bits may differ
    return load_config(None, [*DIGITS, "train.threads=1", *overrides])


def test_rounds_continue_exactly_where_the_last_one_stopped(tmp_path) -> None:
    cfg = config("train.max_steps=30", "optim.name=adamw", "model.dropout=0.1")
    Trainer(config=cfg, run_dir=tmp_path / "once").fit()
    trainer = Trainer(config=cfg, run_dir=tmp_path / "rounds")
    assert trainer.run(until=10) == "until" and trainer.state.step == 10
    assert trainer.run(until=25) == "until" and trainer.state.step == 25
    summary = trainer.fit()  # the rest, to max_steps, then the artifacts
    assert summary["steps"] == 30 and summary["stop_reason"] == "max_steps"
    once, rounds = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("once", "rounds"))
    assert all(torch.equal(once[k], rounds[k]) for k in once)


def test_a_handed_in_model_is_not_reseeded_and_converters_are_recorded(tmp_path) -> None:
    cfg = config("train.max_steps=120", "model.width=48", "optim.lr=3e-3")
    torch.manual_seed(123)
    model = build_model(cfg.model, ModelSpec("classification", (64,), 10))
    state = torch.get_rng_state()
    trainer = Trainer(
        config=cfg, run_dir=tmp_path / "run", model=model, converters=[LowRank(rank=8)]
    )
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is its own
    factored = trainer.model[1]  # Linear(64, 48) became Linear(64, 8) -> Linear(8, 48)
    assert isinstance(factored, torch.nn.Sequential) and factored[0].out_features == 8
    summary = trainer.fit()
    assert summary["best_val_metric"] > 0.8
    record = json.loads((tmp_path / "run/converters.json").read_text())["converters"]
    assert record == [{"name": "low_rank", "rank": 8, "modules": ["1", "3"]}]
    loaded = LoadedRun.load(tmp_path / "run", "cpu")
    assert loaded.model[1][0].weight.shape == (8, 64)
    x = trainer.data.test[0][:16]
    with torch.no_grad():
        expected = trainer.model(x).argmax(-1)
    # predict takes raw features: undo the run's preprocessing
    pre = loaded.preprocessor
    raw = x.reshape(len(x), -1) * torch.tensor(pre.scale) + torch.tensor(pre.shift)
    assert loaded.predict(raw)["predictions"] == expected.tolist()


def test_a_student_distills_from_a_teacher(tmp_path) -> None:
    teacher_run = Trainer(
        config=config("train.max_steps=150", "model.width=128"), run_dir=tmp_path / "teacher"
    )
    teacher_summary = teacher_run.fit()
    assert teacher_summary["best_val_metric"] > 0.9
    cfg = config("train.max_steps=150", "model.width=16")
    loss = distillation_loss(build_loss(cfg.loss, "classification"), temperature=2.0, alpha=0.7)
    student = Trainer(
        config=cfg, run_dir=tmp_path / "student", loss=loss, teacher=teacher_run.model
    )
    summary = student.fit()
    assert summary["best_val_metric"] > 0.75
    x = student.data.val[0]
    with torch.no_grad():
        agree = (student.model(x).argmax(-1) == teacher_run.model(x).argmax(-1)).float().mean()
    assert agree > 0.75  # the student learned the teacher's answers
    assert not any(p.requires_grad for p in teacher_run.model.parameters())
    losses = [e["loss"] for e in map(json.loads, open(tmp_path / "student/metrics.jsonl"))
              if e["split"] == "train"]  # fmt: skip
    assert losses[-1] < losses[0] / 2
