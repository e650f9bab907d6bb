"""A metric's direction is defined once; early stopping, best checkpoints, the summary and the
tuner agree on it (perplexity is lower-is-better everywhere)."""

from __future__ import annotations

import json

import pytest
import torch

from hone.config import TrainConfig
from hone.engine.checkpointing import Checkpointing
from hone.engine.early_stopping import EarlyStopping
from hone.engine.guard import NanGuard
from hone.errors import ConfigError
from hone.metrics import direction, is_better
from hone.run_files import RunFiles
from hone.tune.study import _directions
from tests.conftest import run_hone


def test_directions() -> None:
    assert [direction(k) for k in ("val_loss", "val_perplexity", "best_val_loss")] == ["min"] * 3
    assert [direction(k) for k in ("val_accuracy", "test_r2")] == ["max", "max"]
    assert is_better("val_perplexity", 13.6, 14.0) and not is_better("val_accuracy", 0.5, 0.6)
    with pytest.raises(ConfigError, match="val_perplexity"):
        direction("val_perplexit")
    assert _directions(["val_perplexity", "val_accuracy", "num_parameters"], "auto") == [
        "minimize",
        "maximize",
        "minimize",
    ]


def test_early_stopping_on_perplexity_waits_while_it_falls() -> None:
    stopping = EarlyStopping("val_perplexity", patience=2, min_delta=0.0)
    assert not any(stopping.update(v, step) for step, v in enumerate([17.0, 14.0, 13.6, 13.5]))
    assert stopping.update(13.7, 5) is False and stopping.update(13.8, 6) is True


def test_best_checkpoint_on_perplexity_is_the_lowest(tmp_path) -> None:
    """The trainer's checkpointing keeps the lowest perplexity as the best (it used to keep
    the highest: every metric not ending in 'loss' was maximized)."""
    model = torch.nn.Linear(2, 1)
    checkpointing = Checkpointing(
        RunFiles(tmp_path), TrainConfig(monitor="val_perplexity", keep_best=True), model,
        torch.optim.SGD(model.parameters(), lr=0.1), {}, NanGuard(list(model.parameters()), False),
        lambda event: None,
    )  # fmt: skip
    assert checkpointing.manager.mode == "min" and checkpointing.manager.is_better(13.6)


def test_perplexity_early_stopping_runs_on_while_it_improves(tmp_path) -> None:
    """The command of the issue, on a tiny GPT: it used to stop at step 60 for early stopping
    while validation perplexity fell."""
    run = tmp_path / "run"
    result = run_hone(
        "train", "gpt-shakespeare-char", "--run-dir", str(run),
        "--train.max_steps=200", "--train.max_seconds=0", "--train.eval_every=20",
        "--train.eval_batches=4", "--train.patience=2", "--train.monitor=val_perplexity",
        "--model.n_layer=1", "--model.n_embd=32", "--model.n_head=2", "--model.block_size=32",
        "--train.batch_size=16", "--train.sample_tokens=0", "--log.tensorboard=false",
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())
    events = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    perplexity = [e["perplexity"] for e in events if e["split"] == "val"]
    if summary["stop_reason"] == "early_stopping":
        # a stop only after two evaluations in a row without a new lowest perplexity
        best_before = min(perplexity[:-2])
        assert min(perplexity[-2:]) >= best_before
    else:
        assert summary["steps"] == 200
    assert summary["steps"] > 60
    assert summary["best_val_metric"] == min(perplexity)
