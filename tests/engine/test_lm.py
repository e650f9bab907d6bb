"""Language models through the engine and the CLI: train a tiny GPT, log throughput, sample."""

from __future__ import annotations

import json
import random

import pytest

from tests.conftest import run_hone

TINY_GPT = [
    "--model.name=gpt",
    "--data.name=text",
    "--model.n_layer=2",
    "--model.n_head=2",
    "--model.n_embd=32",
    "--model.block_size=32",
    "--train.batch_size=16",
    "--train.max_steps=120",
    "--train.max_epochs=0",
    "--train.max_seconds=0",
    "--train.eval_every=60",
    "--train.eval_batches=4",
    "--schedule.name=cosine",
    "--schedule.warmup_steps=10",
    "--optim.lr=3e-3",
    "--train.sample_tokens=50",
    "--log.every=20",
]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog and the cat runs far away".split()
    (root / "corpus.txt").write_text(" ".join(rng.choice(words) for _ in range(20000)))
    env = {"HONE_CACHE_DIR": str(root / "cache")}
    result = run_hone(
        "train",
        "gpt-shakespeare-char",
        "--run-dir",
        str(root / "run"),
        f"--data.path={root / 'corpus.txt'}",
        *TINY_GPT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return root, result, env


def test_tiny_gpt_learns_and_logs_throughput(lm_run) -> None:
    root, result, _ = lm_run
    run = root / "run"
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in events if e["split"] == "train"]
    assert [e["step"] for e in train] == list(range(20, 121, 20))
    assert all(e["tokens_per_second"] > 0 and 0 < e["mfu"] < 1 for e in train)
    val = [e for e in events if e["split"] == "val"]
    assert [e["step"] for e in val] == [60, 120]
    # a uniform guess over the ~20 symbols costs ln(20) = 3.0 nats; the model must do far better
    assert val[-1]["loss"] < 1.6
    assert "--- sample ---" in result.stdout
    assert (run / "tokenizer").is_dir() and (run / "model.safetensors").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metric"] == "perplexity" and summary["steps"] == 120


def test_sample_is_reproducible_with_a_seed(lm_run) -> None:
    root, _, env = lm_run
    args = (
        "sample",
        str(root / "run"),
        "--prompt",
        "the quick",
        "--max-new-tokens",
        "30",
        "--top-k",
        "5",
        "--seed",
        "3",
    )
    first, second = run_hone(*args, env=env), run_hone(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert (
        first.stdout.startswith("the quick") and len(first.stdout.strip()) > len("the quick") + 10
    )
    other = run_hone(*args[:-1], "4", env=env)
    assert other.stdout != first.stdout


def test_eval_of_a_language_model_run(lm_run) -> None:
    root, _, env = lm_run
    result = run_hone("eval", str(root / "run"), "--split", "val", env=env)
    assert result.returncode == 0, result.stderr
    assert "perplexity" in result.stdout
    predicted = run_hone(
        "predict", str(root / "run"), "--input", "x.csv", "--output", "y.csv", env=env
    )
    assert predicted.returncode == 2 and "hone sample" in predicted.stderr
