"""Every command that takes a run takes a Hugging Face checkpoint too, end to end through the
CLI: `hone train` continues one on a text file with its own tokenizer, `hone sample` stops at
its end-of-text id, `hone eval` reads text with its tokenizer, `hone export --format hf`
writes a folder transformers loads with hone's logits, `--format onnx` and `hone compress
--quantize int8` take a checkpoint folder, and `hone serve` answers completions from one.

One `hone train` run (a module fixture) serves the tests that need a trained run. `hone
train` and `hone sample` run in fresh processes (nothing of hone.pretrained imported before:
the config and the run loader must find it on their own); the other commands call the CLI's
`main` in this process, which spares each the seconds of importing torch again.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from hone.cli import main
from tests.conftest import run_hone
from tests.pretrained.conftest import EOS

transformers = pytest.importorskip("transformers")

TRAIN = [
    "--model.block_size=32",
    "--train.max_steps=3",
    "--train.batch_size=4",
    "--train.eval_every=0",
    "--train.eval_batches=2",
    "--train.sample_tokens=0",
    "--train.precision=fp32",
    "--train.threads=1",
    "--log.tensorboard=false",
    "--log.progress=off",
    "--log.stats_every=0",
]


def hone(*argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `hone ARGV`, run by the CLI's main in this process."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Any) -> Path:
    return Path(tiny_checkpoint("llama"))


@pytest.fixture(scope="module")
def trained(checkpoint: Path, notes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`hone train pretrained-text` from the tiny checkpoint: three steps on notes.txt."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    done = run_hone(
        "train", "pretrained-text", f"--model.path={checkpoint}", f"--data.path={notes}",
        *TRAIN, "--run-dir", str(run), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return run


def test_train_continues_the_checkpoint_with_its_tokenizer(trained: Path, checkpoint: Path):
    config = (trained / "config.toml").read_text()
    assert 'name = "pretrained"' in config and f'path = "{checkpoint}"' in config
    assert f'tokenizer_path = "{checkpoint}"' in config  # filled in: the checkpoint's
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["steps"] == 3
    # The run's tokenizer is the checkpoint's, and its ids are the model's.
    assert (trained / "tokenizer" / "tokenizer_config.json").is_file()
    assert json.loads((trained / "data.json").read_text())["vocab_size"] <= 384
    # Three steps at lr 3e-5 moved every weight a little from the checkpoint's, no more.
    start = load_file(str(checkpoint / "model.safetensors"))["model.embed_tokens.weight"]
    end = load_file(str(trained / "model.safetensors"))["token_embedding.weight"]
    assert 0 < (end - start).abs().max() < 1e-3


def test_sample_stops_at_the_checkpoint_end_of_text_id(checkpoint: Path, tmp_path: Path):
    # A copy whose logits are all zero: greedy decoding draws id 0 every time. Its
    # generation_config.json names 0 as an end-of-text id too, so the text ends at once;
    # without stopping it would print "<s>" twenty times.
    copy = tmp_path / "stops"
    shutil.copytree(checkpoint, copy)
    weights = load_file(str(copy / "model.safetensors"))
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        weights[name] = torch.zeros_like(weights[name])
    save_file(weights, str(copy / "model.safetensors"), metadata={"format": "pt"})
    (copy / "generation_config.json").write_text(json.dumps({"eos_token_id": [EOS, 0]}))
    done = run_hone(
        "sample", str(copy), "--prompt", "Hello", "--temperature", "0", "--max-new-tokens", "20"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello\n"


def test_eval_reads_text_with_the_checkpoint_tokenizer(checkpoint: Path, notes: Path):
    code, out, err = hone(
        "eval", str(checkpoint), "--data.name=text", f"--data.path={notes}", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]), rel=1e-4)
    # transformers' loss on the same tokens: the checkpoint's tokens of the validation text
    # (its last 15%), every one predicted once in windows of the checkpoint's context.
    from hone.data.text.datasets import split_text
    from hone.data.text.tokenizers import load_tokenizer
    from hone.engine.language_task import whole_split

    _, val = split_text(notes.read_text(encoding="utf-8"), 0.15)
    tokens = load_tokenizer(str(checkpoint)).encode_array(val)
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in whole_split(tokens, 128, 64):
            logits = model(x).logits
            total += float(
                torch.nn.functional.cross_entropy(
                    logits.flatten(0, 1), y.flatten(), reduction="sum"
                )
            )
            count += y.numel()
    assert result["loss"] == pytest.approx(total / count, abs=1e-4)
    code, _, err = hone("eval", str(checkpoint))
    assert code == 2
    assert err.strip().splitlines() == [
        "hone: error: a pretrained checkpoint comes without data; name yours, e.g. `hone eval "
        "CHECKPOINT --data.name=text --data.path=FILE` (read with the checkpoint's tokenizer)"
    ]


def test_export_hf_loads_in_transformers_with_hone_logits(trained: Path, tmp_path: Path):
    from hone.engine.inference import LoadedRun

    out = tmp_path / "hf"
    code, _, err = hone(
        "export", str(trained), "--format", "hf", "--output", str(out),
        "--max-shard-size", "100KB",
    )  # fmt: skip
    assert code == 0, err
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded past the limit
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    run = LoadedRun.load(trained, "cpu")
    text = "The quick brown fox jumps"
    ids = tokenizer(text)["input_ids"]
    assert run.tokenizer is not None and ids == run.tokenizer.encode(text)
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits
        ours = run.model(torch.tensor([ids]))
    assert (theirs - ours).abs().max() < 1e-4


def test_export_onnx_from_a_checkpoint_folder(checkpoint: Path, tmp_path: Path):
    code, _, err = hone("export", str(checkpoint), "--format", "onnx", "--output", f"{tmp_path}/")
    assert code == 0, err
    assert (tmp_path / "model.onnx").is_file()
    parity = json.loads((tmp_path / "model.onnx.parity.json").read_text())
    assert parity["max_abs_diff"] <= 1e-4


def test_compress_int8_from_a_checkpoint_folder(checkpoint: Path, notes: Path, tmp_path: Path):
    out = tmp_path / "int8"
    code, stdout, err = hone(
        "compress", str(checkpoint), "--quantize", "int8", "--backend", "torch",
        "--output", str(out), "--repeats", "1", "--data.name=text", f"--data.path={notes}",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    table = json.loads(stdout)
    assert table["gate"]["passed"] and Path(table["output"]) == out
    assert (out / "model-int8.safetensors").is_file()


def test_serve_answers_completions_from_a_checkpoint(checkpoint: Path):
    from starlette.testclient import TestClient

    from hone.engine.inference import LoadedRun
    from hone.serve.app import create_app
    from hone.serve.settings import ServeSettings

    app = create_app(ServeSettings(run=str(checkpoint), threads=1))
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ready").text
            time.sleep(0.05)
        assert client.get("/v1/models").json()["data"][0]["id"] == checkpoint.name
        ask = {"prompt": "The quick", "max_tokens": 5, "seed": 1, "temperature": 0}
        answer = client.post("/v1/completions", json=ask)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    # What `hone sample` computes for the same request (LoadedRun, greedy)
    expected = LoadedRun.load(checkpoint, "cpu").complete("The quick", 5, temperature=0, seed=1)
    assert body["choices"][0]["text"] == expected.text
    assert body["choices"][0]["finish_reason"] == expected.finish_reason
    assert body["usage"]["prompt_tokens"] == expected.prompt_tokens
