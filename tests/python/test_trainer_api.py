"""`hone.Trainer` from Python: a user's own model and data as they hold them."""

from __future__ import annotations

import json
import os
import signal
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

import hone
from hone.errors import ConfigError
from tests import forking
from tests.python.nets import DictDigits, DigitsNet, StreamDigits, digits

ROOT = Path(__file__).resolve().parents[2]
QUIET = [
    "optim.lr=1e-2",
    "log.progress=off",
    "log.tensorboard=false",
    "log.stats_every=0",
    "train.threads=1",
]


@pytest.fixture(scope="module")
def xy() -> tuple[torch.Tensor, torch.Tensor]:
    return digits(800)


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [e["loss"] for e in map(json.loads, lines) if e["split"] == "train"]


def fit(model, train, val=None, tmp_path=None, overrides=(), **kwargs):
    run_dir = tmp_path / "run"
    summary = hone.Trainer(
        model, train, val, overrides=[*QUIET, *overrides], run_dir=run_dir, **kwargs
    ).fit()
    return summary, run_dir


def test_dataloader_of_own_model_learns(xy, tmp_path):
    x, y = xy
    torch.manual_seed(0)
    train = DataLoader(TensorDataset(x[:600], y[:600]), batch_size=30, shuffle=True)
    val = DataLoader(TensorDataset(x[600:], y[600:]), batch_size=100)
    summary, run_dir = fit(DigitsNet(), train, val, tmp_path, ["train.max_epochs=4"])
    assert summary["steps"] == 4 * 20  # the loader's own batches: 600 / 30 a epoch
    curve = losses(run_dir)
    assert curve[-1] < 0.5 * curve[0]
    assert summary["best_val_metric"] > 0.8
    assert json.loads((run_dir / "data.json").read_text())["input_shape"] == [64]
    event = next(
        e for e in map(json.loads, (run_dir / "metrics.jsonl").open()) if e["split"] == "train"
    )
    assert event["samples_per_second"] > 0


def test_iterable_dataset_dict_batches_and_arrays(xy, tmp_path):
    x, y = xy
    torch.manual_seed(0)
    stream, _ = fit(
        DigitsNet(), StreamDigits(x[:600], y[:600]), StreamDigits(x[600:], y[600:]),
        tmp_path / "stream", ["train.max_steps=60", "train.batch_size=32"],
    )  # fmt: skip
    # An iterable without a length: one evaluation, at the end.
    assert stream["steps"] == 60 and stream["best_val_metric"] > 0.6
    dicts, _ = fit(
        DigitsNet(), DictDigits(x[:600], y[:600]), DictDigits(x[600:], y[600:]),
        tmp_path / "dicts", ["train.max_epochs=3", "train.batch_size=32",
                             "data.input_column=pixels"],
    )  # fmt: skip
    assert dicts["best_val_metric"] > 0.6
    arrays, run_dir = fit(
        DigitsNet(), (x[:600].numpy(), y[:600].numpy()), (x[600:].numpy(), y[600:].numpy()),
        tmp_path / "arrays", ["train.max_epochs=5", "train.batch_size=32"],
    )  # fmt: skip
    assert arrays["best_val_metric"] > 0.6
    assert losses(run_dir)[-1] < losses(run_dir)[0]


def test_hugging_face_dataset(xy, tmp_path):
    datasets = pytest.importorskip("datasets")
    x, y = xy
    table = {"image": x.numpy().tolist(), "label": y.numpy().tolist()}
    train = datasets.Dataset.from_dict({k: v[:600] for k, v in table.items()})
    val = datasets.Dataset.from_dict({k: v[600:] for k, v in table.items()})
    torch.manual_seed(0)
    summary, run_dir = fit(
        DigitsNet(), train, val, tmp_path, ["train.max_epochs=3", "train.batch_size=32"]
    )
    assert summary["best_val_metric"] > 0.6
    assert losses(run_dir)[-1] < losses(run_dir)[0]


def test_parts_as_users_hold_them(xy, tmp_path):
    """An optimizer factory, a loss callable, a metric of one's own that early stopping and
    best checkpoints follow, as they follow a built-in one."""
    x, y = xy
    calls = []

    def loss(out, target):
        calls.append(1)
        return torch.nn.functional.cross_entropy(out, target)

    def error_rate(out, target):
        return (out.argmax(-1) != target).float().mean()

    torch.manual_seed(0)
    summary, run_dir = fit(
        DigitsNet(), (x[:600], y[:600]), (x[600:], y[600:]), tmp_path,
        ["train.max_steps=200", "train.eval_every=10", "train.monitor=val_error_rate",
         "train.patience=2", "train.keep_best=true", "train.batch_size=32"],
        optimizer=lambda params: torch.optim.SGD(params, lr=0.5),
        loss=loss, metrics={"error_rate": hone.Metric("error_rate", "min", fn=error_rate)},
    )  # fmt: skip
    assert calls and summary["optimizer"] == "SGD"
    assert summary["metric_directions"] == {"error_rate": "min"}
    vals = [e for e in map(json.loads, (run_dir / "metrics.jsonl").open()) if e["split"] == "val"]
    rates = [e["error_rate"] for e in vals]
    assert summary["best_val_error_rate"] == min(rates)
    assert abs(rates[-1] - (1 - vals[-1]["accuracy"])) < 1e-6
    # Early stopping follows the metric's own direction ("min"): with patience 2 the run ends
    # two evaluations after its lowest error rate, or reaches its bound before that. Read as
    # "max", it would stop two evaluations after the first and worst one.
    best_index = rates.index(min(rates))
    if summary["stop_reason"] == "early_stopping":
        assert best_index == len(rates) - 3
    else:
        assert summary["stop_reason"] == "max_steps" and best_index >= len(rates) - 2
    assert len(rates) > 3


def test_errors_before_anything_is_written(xy, tmp_path):
    x, y = xy
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match="no bound"):
        hone.Trainer(DigitsNet(), (x, y), config={"train": {"max_steps": 0}}, run_dir=run_dir)
    with pytest.raises(ConfigError, match="not the model's"):
        other = DigitsNet()
        hone.Trainer(
            DigitsNet(), (x, y), overrides=["train.max_steps=1"], run_dir=run_dir,
            optimizer=torch.optim.SGD(other.parameters(), lr=0.1),
        )  # fmt: skip
    with pytest.raises(ConfigError, match="one-shot iterator"):
        gen = ((x[i : i + 8], y[i : i + 8]) for i in range(0, 64, 8))
        hone.Trainer(DigitsNet(), gen, overrides=["train.max_steps=1"], run_dir=run_dir)
    with pytest.raises(ConfigError, match="go with train_data"):
        hone.Trainer(DigitsNet(), val_data=(x, y), overrides=["train.max_steps=1"], run_dir=run_dir)
    assert not run_dir.exists()


def test_plain_iterable_resumes_by_skipping_with_one_warning(xy, tmp_path):
    x, y = xy
    batches = [(x[i : i + 40], y[i : i + 40]) for i in range(0, 400, 40)]  # 10 a epoch
    overrides = [*QUIET, "train.max_steps=14", "train.checkpoint_every=7"]
    torch.manual_seed(0)
    hone.Trainer(DigitsNet(), batches, overrides=overrides, run_dir=tmp_path / "full").fit()
    torch.manual_seed(0)
    first = hone.Trainer(
        DigitsNet(), batches, overrides=[*overrides[:-2], "train.max_steps=7"],
        run_dir=tmp_path / "cut",
    )  # fmt: skip
    first.fit()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        hone.Trainer(
            DigitsNet(), batches, overrides=overrides, run_dir=tmp_path / "cut", resume=True
        ).fit()
    said = [w for w in seen if "cannot restore its position" in str(w.message)]
    assert len(said) == 1
    full = load_file(tmp_path / "full" / "model.safetensors")
    cut = load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(full[k], cut[k]) for k in full)


def test_killed_python_run_resumes_bit_identical(tmp_path):
    """A user's script with a StatefulDataLoader, SIGKILLed mid-epoch and run again with
    resume, ends with the weights of a run never stopped. Each run is its own process, a
    fork of a server that imported torch already (tests/forking.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script, logs = str(ROOT / "tests" / "python" / "kill_run.py"), tmp_path / "logs"

    def run(*args: str) -> None:
        done = forking.run(list(args), ROOT, env, logs, timeout=300, script=script)
        assert done.returncode == 0, done.stderr

    whole = tmp_path / "whole"
    run(str(whole))
    killed = tmp_path / "killed"
    proc = forking.Forked([str(killed)], ROOT, env, logs, script=script)
    deadline = time.monotonic() + 120
    # Past step 30: mid-epoch (25 batches an epoch), after a few checkpoints.
    while (
        not (killed / "checkpoints").exists()
        or len(list((killed / "checkpoints").glob("step-*"))) < 3
        or _step(killed) < 37
    ):
        assert proc.poll() is None, proc.stderr_text()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model.safetensors").exists()
    run(str(killed), "--resume")
    a, b = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((killed / "summary.json").read_text())["steps"] == 120


def _step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [
        json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")
    ]
    return max(steps, default=0)
