"""What the benches that compare hone with another library in fresh processes share: a
worker subprocess that prints its result as JSON, the process's resident memory, and the
model they compare on (SmolLM2-135M's config)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# SmolLM2-135M's config.json (HuggingFaceTB/SmolLM2-135M), random weights: speed and memory
# do not depend on their values.
SMOLLM2_135M = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "initializer_range": 0.041666666666666664,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": 0,
    "eos_token_id": 0,
}


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set (VmRSS) or its peak so far (VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def as_hone_trains() -> dict[str, str]:
    """The environment `hone train` runs its training process in (glibc's malloc tunables,
    hone.glibc_malloc), for a worker that stands for that process."""
    from hone.glibc_malloc import training_environment

    return training_environment(os.environ) or dict(os.environ)


def in_subprocess(
    script: str, threads: int, *args: str, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run `script _worker ARGS` in a fresh interpreter with `threads` OpenMP threads (peak
    RSS is then the worker's own), in `env` (default: this process's); its last line of
    output is its result, as JSON."""
    env = {**(os.environ if env is None else env), "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, script, "_worker", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode:
        sys.exit(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))
