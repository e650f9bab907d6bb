"""One way to load a run: eval, predict, sample and the trainer's own sample agree."""

from __future__ import annotations

import json

import torch

from hone.cli import main
from hone.config import load_config
from hone.engine import LoadedRun, Trainer
from hone.engine.inference import evaluate_run
from tests.checkpoint.helpers import gpt
from tests.conftest import run_hone


def test_the_trainers_sample_is_what_hone_sample_draws(tmp_path) -> None:
    overrides = [
        *gpt(tmp_path),
        "train.max_steps=30",
        "train.sample_tokens=40",
        "log.tensorboard=false",
    ]
    trainer = Trainer(config=load_config(None, overrides), run_dir=tmp_path / "run")
    summary = trainer.fit()
    loaded = LoadedRun.load(tmp_path / "run", "cpu")
    assert loaded.sample("\n", 40, temperature=1.0, top_k=50, seed=0) == summary["sample"]
    result = run_hone(
        "sample", str(tmp_path / "run"), "--prompt", "\n", "--max-new-tokens", "40",
        "--top-k", "50", "--seed", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "\n" + summary["sample"] + "\n"
    # eval reads the same validation windows the trainer evaluated on
    metrics = evaluate_run(tmp_path / "run", "val", "cpu")
    assert abs(metrics["loss"] - summary["final_val_loss"]) < 1e-6
    assert json.loads((tmp_path / "run/eval-val.json").read_text())["perplexity"] > 1


def test_predict_matches_the_trained_model(tmp_path) -> None:
    overrides = ["data.name=digits", "model.name=mlp", "train.max_steps=20"]
    # fp32, not the default 'auto': the fp32 model below is the reference, to within 1e-5
    cfg = load_config(None, [*overrides, "train.precision=fp32", "log.tensorboard=false"])
    trainer = Trainer(config=cfg, run_dir=tmp_path / "run")
    summary = trainer.fit()
    loaded = LoadedRun.load(tmp_path / "run", "cpu")
    assert loaded.task.name == "classification" and loaded.spec == trainer.spec
    assert abs(loaded.evaluate("test")["accuracy"] - summary["test_accuracy"]) < 1e-9
    x = trainer.data.test[0][:10].reshape(10, -1)
    pre = loaded.preprocessor
    raw = x * torch.tensor(pre.scale) + torch.tensor(pre.shift)
    out = loaded.predict(raw)
    with torch.no_grad():
        probabilities = trainer.model(x).softmax(-1)
    torch.testing.assert_close(torch.tensor(out["probabilities"]), probabilities, atol=1e-5, rtol=0)
    assert out["predictions"] == probabilities.argmax(-1).tolist()


def test_eval_predict_and_sample_take_a_backend_by_name(tmp_path, capsys) -> None:
    """--backend names an inference backend (hone.engine.backends); an unknown name is
    refused in one line that lists the known ones, before the run is read."""
    commands = (
        ["eval", str(tmp_path)],
        ["predict", str(tmp_path), "--input", "in.csv", "--output", "out.csv"],
        ["sample", str(tmp_path)],
    )
    for command in commands:
        assert main([*command, "--backend", "tensorrt"]) == 2, command
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert "unknown inference backend 'tensorrt'" in err and "auto, onnx, torch" in err
