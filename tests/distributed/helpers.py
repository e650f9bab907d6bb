"""Shared pieces of the multi-process tests: tiny configs, a tiny corpus, process runners."""

from __future__ import annotations

import json
import os
import random
import subprocess
import tempfile
from pathlib import Path

import torch.distributed.run
from safetensors.torch import load_file

from hone.track.run import read_metrics
from tests import forking

ROOT = Path(__file__).resolve().parents[2]

# Short runs, fp32, no dropout (each rank draws its own dropout masks, so with dropout a
# 2-process run equals the 1-process one in distribution only), nothing optional written.
COMMON = [
    "train.max_steps=50",
    "train.max_epochs=0",
    "log.every=1",
    "log.tensorboard=false",
    "log.progress=off",
    "model.dropout=0",
]
MLP = ["train.batch_size=32", *COMMON]
GPT_TOML = """
recipe = "tiny-gpt"
[model]
name = "gpt"
n_layer = 2
n_head = 2
n_embd = 32
block_size = 16
# No biases: the key projection's bias has a gradient of exactly zero in exact arithmetic
# (softmax ignores a shift shared by all keys), so its computed gradient is pure rounding
# noise, which Adam scales up to lr-sized steps that differ with the summation order.
bias = false
[data]
name = "text"
tokenizer = "char"
val_fraction = 0.1
[optim]
name = "adamw"
lr = 0.003
[train]
batch_size = 8
eval_every = 25
eval_batches = 2
sample_tokens = 0
"""


def write_corpus(folder: Path) -> Path:
    """About 6,000 characters of pseudo-English, the same every time."""
    rng = random.Random(0)
    words = "the a to of and in that it is was for on as with his he be at by i".split()
    words += "king lord love night sword crown river stone light".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 10))) for _ in range(160)]
    path = folder / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def gpt_config(folder: Path) -> tuple[str, list[str]]:
    """(config path, overrides) of the tiny GPT on the tiny corpus."""
    toml = folder / "tiny-gpt.toml"
    toml.write_text(GPT_TOML)
    return str(toml), [f"data.path={write_corpus(folder)}", *COMMON]


def worker_env(**extra: str) -> dict[str, str]:
    """The test's environment for subprocesses: hone importable, one thread per process."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def torchrun(args: list[str], nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `torchrun --standalone --nproc-per-node NPROC ARGS` (the external-launcher path):
    the launcher a fork of a server that imported torch already (tests/forking.py), the
    workers it starts fresh interpreters."""
    argv = ["--standalone", f"--nproc-per-node={nproc}", *args]
    logs = Path(tempfile.gettempdir()) / f"hone-test-logs-{os.getpid()}"
    launcher = torch.distributed.run.__file__  # runs main() as __main__
    return forking.run(argv, ROOT, worker_env(), logs, timeout, script=launcher)


def run_group(runs: list[dict], folder: Path, nproc: int = 2) -> None:
    """Train each {"config", "overrides", "run_dir"} in turn in one NPROC-process group."""
    spec = folder / "runs.json"
    spec.write_text(json.dumps(runs))
    result = torchrun(["-m", "tests.distributed.worker", str(spec)], nproc=nproc)
    # A worker that dies in C++ (an abort) prints no traceback: show what came before too.
    first_error = max(result.stderr.find("Traceback"), 0)
    assert result.returncode == 0, result.stderr[max(first_error - 3000, 0) : first_error + 6000]


def train_losses(run_dir: Path) -> list[float]:
    return [e["loss"] for e in read_metrics(run_dir) if e["split"] == "train"]


def max_weight_difference(run_a: Path, run_b: Path) -> float:
    a, b = load_file(run_a / "model.safetensors"), load_file(run_b / "model.safetensors")
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max((a[k] - b[k]).abs().max().item() for k in a)
