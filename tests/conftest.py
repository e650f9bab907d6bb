"""Shared fixtures: temp run directories, a cache dir inside tmp, a `hone` subprocess runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A character GPT that trains in a second or two: for tests that need a finished LM run.
TINY_GPT_RUN = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=16",
    "model.block_size=16",
    "train.batch_size=4",
    "train.max_seconds=0",
    "train.eval_every=0",
    "train.eval_batches=2",
    "train.sample_tokens=0",
]


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test writes outside its temp folders: tokenized corpora and FLOP measurements included."""
    cache = tmp_path_factory.getbasetemp() / "hone-cache"
    monkeypatch.setenv("HONE_CACHE_DIR", str(cache))


def run_hone(
    *args: str, cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m hone ARGS` in a subprocess and capture its output."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hone", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def hone_cli():
    return run_hone
