"""The learning check of fine-tuning, end to end through the CLI: `hone train` with LoRA on the
example task of examples/finetune (a word put in brackets), then `hone eval --generate`: the
held-out exact match rises from the base's (0) to at least 90%.

The base is the tiny random Llama of examples/finetune/tiny_checkpoint.py (written by
transformers, a byte-level tokenizer and ChatML's template): every answer token is a
character, so held-out words (none of them in the training file) are copied, not recalled.
Also here: the example files are what make_data.py writes, `hone tune` searches the adapters'
rank, alpha and learning rate, and `hone doctor` reads a LoRA run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hone.cli import main
from hone.doctor import diagnose
from tests.conftest import ROOT, run_hone

transformers = pytest.importorskip("transformers")

EXAMPLES = ROOT / "examples" / "finetune"
TINY_CHECKPOINT = EXAMPLES / "tiny_checkpoint.py"
QUIET = [
    "train.precision=fp32", "train.threads=1", "log.tensorboard=false", "log.progress=off",
    "log.stats_every=0", "train.sample_tokens=0",
]  # fmt: skip
# The recipe's rank-16 adapters on every linear layer, 150 steps of 8 rows at a higher rate.
LEARN = [
    "optim.lr=5e-3", "schedule.min_lr=5e-4", "train.max_steps=150", "train.batch_size=8",
    "train.eval_every=0", "log.stats_every=25",
]  # fmt: skip


def chat_llama(folder: Path) -> Path:
    """The tiny random chat Llama of examples/finetune/tiny_checkpoint.py, written into
    `folder`."""
    spec = importlib.util.spec_from_file_location("tiny_checkpoint", TINY_CHECKPOINT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return Path(script.write_checkpoint(folder))


def lora_overrides(checkpoint: Path) -> list[str]:
    """The `smollm2-135m-lora` recipe on `checkpoint` instead of SmolLM2: the example data
    (wherever the tests run from), LoRA on every linear layer, 128-token rows."""
    return [
        f"model.path={checkpoint}", "model.block_size=128", *QUIET,
        f"data.path={EXAMPLES / 'train.jsonl'}", f"data.val_path={EXAMPLES / 'val.jsonl'}",
    ]  # fmt: skip


def test_make_data_writes_the_committed_files_again(tmp_path: Path) -> None:
    script = EXAMPLES / "make_data.py"
    done = subprocess.run(
        [sys.executable, str(script), "--output", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for name in ("train.jsonl", "val.jsonl"):
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), name
    train, val = (
        [json.loads(line) for line in (EXAMPLES / n).open()] for n in ("train.jsonl", "val.jsonl")
    )
    assert (len(train), len(val)) == (400, 50)
    train_words, val_words = ({r["messages"][1]["content"] for r in rs} for rs in (train, val))
    assert not train_words & val_words  # the held-out words are new


@pytest.mark.slow  # 2 CLI processes: about 26 CPU s; 58-109 s on 2 cores shared at load 7-10
def test_lora_learns_the_example_task_through_the_cli(tmp_path: Path) -> None:
    checkpoint = chat_llama(tmp_path / "chat-llama")
    run = tmp_path / "brackets"
    one_thread = {"OMP_NUM_THREADS": "1", "HONE_CACHE_DIR": str(tmp_path / "cache")}
    args = [f"--{o}" for o in [*lora_overrides(checkpoint), *LEARN]]
    trained = run_hone("train", "smollm2-135m-lora", "--run-dir", str(run), *args, env=one_thread)
    assert trained.returncode == 0, trained.stderr
    judged = run_hone("eval", str(run), "--generate", "--json", env=one_thread)
    assert judged.returncode == 0, judged.stderr
    models = json.loads(judged.stdout)["models"]
    before, after = models["before"], models["after"]
    print(f"exact match {before['exact_match']:.0%} -> {after['exact_match']:.0%}")
    assert before["exact_match"] == 0 and before["contains"] == 0
    assert after["exact_match"] >= 0.9, after["answers"]
    assert after["loss"] < before["loss"] / 10
    # Doctor reads a LoRA run as one: the random base's first loss (10.7, twice a uniform
    # guess's) is the checkpoint's, not a bad init; the adapters' gradients say nothing of depth.
    report = diagnose(run)
    assert report["adapters"] and report["statistics"] and report["healthy"], report
    found = {finding["id"] for finding in report["findings"]}
    assert not found & {"bad_initialization", "vanishing_gradients", "exploding_gradients"}


def test_hone_tune_searches_the_adapters_rank_alpha_and_lr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = chat_llama(tmp_path / "chat-llama")
    overrides = [*lora_overrides(checkpoint), "train.max_steps=2", "train.batch_size=4",
                 "train.eval_batches=1", "tune.report=false"]  # fmt: skip
    study = tmp_path / "study"
    args = ["tune", "smollm2-135m-lora", "--trials", "2", "--dir", str(study)]
    assert main([*args, *(f"--{o}" for o in overrides)]) == 0, capsys.readouterr().err
    assert "study smollm2-135m-lora: 2 complete" in capsys.readouterr().out
    trials = sorted(study.glob("trials/trial-*/config.toml"))
    assert len(trials) == 2
    tried = [tomllib.loads(t.read_text()) for t in trials]
    assert all(t["lora"]["enabled"] and t["lora"]["rank"] in (4, 8, 16, 32) for t in tried)
    assert len({(t["lora"]["rank"], t["lora"]["alpha"], t["optim"]["lr"]) for t in tried}) == 2
