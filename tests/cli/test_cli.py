"""`hone` in a subprocess: what a user types, what it prints, what it leaves behind."""

from __future__ import annotations

import csv
import json
import math
import tomllib

import pytest

from tests.conftest import run_hone


def test_recipes_lists_one_line_each() -> None:
    result = run_hone("recipes")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    names = [line.split()[0] for line in lines]
    assert {"linreg", "mlp-digits", "cnn-digits"} <= set(names)
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)


def test_config_show_is_accepted_back_by_train(tmp_path) -> None:
    shown = run_hone("config", "show", "linreg", "--optim.lr=0.07", "--train.max_epochs=2")
    assert shown.returncode == 0, shown.stderr
    assert tomllib.loads(shown.stdout)["optim"]["lr"] == 0.07
    path = tmp_path / "resolved.toml"
    path.write_text(shown.stdout)
    again = run_hone("config", "show", str(path))
    assert again.stdout == shown.stdout
    trained = run_hone("train", str(path), "--run-dir", str(tmp_path / "run"))
    assert trained.returncode == 0, trained.stderr
    assert tomllib.loads((tmp_path / "run" / "config.toml").read_text()) == tomllib.loads(
        shown.stdout
    )


def test_train_eval_predict_end_to_end(tmp_path) -> None:
    run = tmp_path / "run"
    trained = run_hone("train", "linreg", "--run-dir", str(run), "--train.max_epochs=10")
    assert trained.returncode == 0, trained.stderr
    for name in ("config.toml", "metrics.jsonl", "model.safetensors", "summary.json"):
        assert (run / name).is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 10 * (
        700 // 32
    )  # 70% of 1000 samples for training, drop-last batches
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in events if e["split"] == "train"]
    assert steps == sorted(set(steps))

    evaluated = run_hone("eval", str(run), "--split", "test")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "r2:" in evaluated.stdout
    result = json.loads((run / "eval-test.json").read_text())
    assert result["r2"] > 0.95

    data = json.loads((run / "data.json").read_text())
    features = data["feature_names"]
    src = tmp_path / "in.csv"
    with open(src, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(features)
        writer.writerow([0.0] * len(features))
        writer.writerow([1.0] * len(features))
    out = tmp_path / "out.csv"
    predicted = run_hone("predict", str(run), "--input", str(src), "--output", str(out))
    assert predicted.returncode == 0, predicted.stderr
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 2 and all("prediction" in r for r in rows)
    predictions = [float(r["prediction"]) for r in rows]
    assert all(math.isfinite(p) for p in predictions)
    assert predictions[0] != predictions[1]  # the model reads the features it is given


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "linreg", "--optim.lrr=0.1"], "did you mean 'optim.lr'"),
        (["train", "linreg", "--optim.lr=fast"], "optim.lr must be a number"),
        (["train", "linreg", "--optim.lr=-1"], "optim.lr must be greater than 0"),
        (["train", "mlp-digits", "--model.dropout=1"], "model.dropout must be less than 1"),
        (["train", "linreg", "--train.batch_size=0"], "train.batch_size must be at least 1"),
        (["train", "linreg", "--optim.name=adamm"], "did you mean 'adam"),
        (["train", "linreg", "--loss.name=hinge"], "unknown loss 'hinge'"),
        (["train", "linreg", "--schedule.name=cosin"], "did you mean 'cosine'"),
        (["train", "linreg", "--model.name=transformer"], "unknown model 'transformer'"),
        (["train", "linreg", "--data.name=imagenet"], "unknown data set 'imagenet'"),
        (["train", "no-such-recipe"], "no recipe or config file"),
        (["train", "missing.toml"], "does not exist"),
        (["train", "linreg", "--loss.name=cross_entropy"], "continuous"),
        (["train", "mlp-digits", "--loss.name=mse"], "class labels"),
        (
            ["train", "linreg", "--data.name=csv", "--data.path=/nonexistent/x.csv"],
            "/nonexistent/x.csv",
        ),
        (["train", "linreg", "--train.batch_size=5000"], "larger than the training split"),
        (["train", "linreg", "--train.device=cuda:3"], "CUDA"),
        (["train", "linreg", "--bogus"], "unrecognized arguments"),
        (["eval", "/nonexistent-run"], "not a hone run directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str, tmp_path) -> None:
    result = (
        run_hone(*args, "--run-dir", str(tmp_path / "r")) if args[0] == "train" else run_hone(*args)
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert needle in lines[0]
