"""`train.eval_batches = 0`: a language model evaluated on every token of its split."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hone.config import load_config
from hone.engine import Trainer
from hone.engine.tasks import WHOLE_SPLIT_TOKENS, whole_split
from hone.models.gpt import RMSNorm
from tests.conftest import TINY_GPT_RUN


def test_every_token_after_the_first_is_predicted_once() -> None:
    tokens = np.arange(1000) % 97
    batches = list(whole_split(tokens, context_length=64, batch_size=4))
    targets = torch.cat([y.flatten() for _, y in batches])
    inputs = torch.cat([x.flatten() for x, _ in batches])
    assert torch.equal(targets, torch.from_numpy(tokens[1:]))
    assert torch.equal(inputs, torch.from_numpy(tokens[:-1]))
    # whole windows first, in order, then the shorter tail: 999 = 15 x 64 + 39
    assert [tuple(x.shape) for x, _ in batches] == [(15, 64), (1, 39)]
    assert 15 * 64 < WHOLE_SPLIT_TOKENS  # the batch grew past the training batch of 4


def test_ranks_share_equal_whole_windows() -> None:
    tokens = np.arange(1000)
    shares = [list(whole_split(tokens, 64, 4, rank, 2)) for rank in range(2)]
    counts = [sum(y.numel() for _, y in share) for share in shares]
    assert counts[0] == counts[1] == 7 * 64  # 15 whole windows cut to 14, 7 each
    starts = sorted(int(x[i, 0]) for share in shares for x, _ in share for i in range(len(x)))
    assert starts == list(range(0, 14 * 64, 64))


def test_a_run_evaluates_its_whole_validation_split(tmp_path) -> None:
    overrides = [*TINY_GPT_RUN, "train.max_steps=3", "train.eval_batches=0", "log.progress=off"]
    trainer = Trainer(
        config=load_config("gpt-shakespeare-char", overrides), run_dir=tmp_path / "run"
    )
    summary = trainer.fit()
    # the same loss computed here: every full window, then the tail
    val, block = np.asarray(trainer.data.val, dtype=np.int64), trainer.cfg.model.block_size
    full = (len(val) - 1) // block
    windows = torch.from_numpy(val[: full * block + 1])
    pieces = [windows[:-1].view(full, block), windows[1:].view(full, block)]
    tail = torch.from_numpy(val[full * block :])
    total, count = 0.0, 0
    trainer.model.eval()
    with torch.no_grad():
        for first in range(0, full, 2048):
            x, y = (p[first : first + 2048] for p in pieces)
            total += F.cross_entropy(trainer.model(x).flatten(0, 1), y.flatten(), reduction="sum")
            count += y.numel()
        if len(tail) > 1:
            total += F.cross_entropy(trainer.model(tail[None, :-1])[0], tail[1:], reduction="sum")
            count += len(tail) - 1
    total = float(total)
    assert count == len(val) - 1
    assert summary["final_val_loss"] == pytest.approx(total / count, rel=1e-5)
    assert math.isfinite(summary["final_val_loss"])


def test_rms_norm_runs_in_its_inputs_dtype() -> None:
    norm = RMSNorm(8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 8)
    assert torch.equal(norm(x), torch.nn.RMSNorm.forward(norm, x))  # fp32: nn.RMSNorm's
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it falls back to the unfused kernel
        out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), norm(x), atol=2e-2)


def test_the_speedrun_recipe_trains(tmp_path) -> None:
    overrides = [
        "model.block_size=32",
        "train.batch_size=4",
        "train.max_steps=4",
        "train.eval_batches=1",
        "train.sample_tokens=0",
        "log.progress=off",
    ]
    cfg = load_config("gpt-shakespeare-speedrun", overrides)
    assert (cfg.optim.name, cfg.model.pos, cfg.schedule.name) == ("muon", "rope", "wsd")
    summary = Trainer(config=cfg, run_dir=tmp_path / "run").fit()
    assert summary["steps"] == 4 and math.isfinite(summary["final_val_loss"])
    assert summary["precision"] == "fp32"  # HONE_NATIVE_BF16=0 in the tests: auto is fp32
