"""Shared fixtures: temp run directories, a cache dir inside tmp, a `hone` subprocess runner."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hone.hardware import OVERRIDE_ENV
from tests import forking

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


@pytest.fixture(autouse=True, scope="session")
def _no_native_bf16() -> Iterator[None]:
    """'auto' precisions (train.precision, optim.muon_precision) resolve to fp32 whatever the
    host: results must not depend on whether its CPU has AVX512-BF16. Session-wide, so that
    runs trained by module and session fixtures see it too; a test about bf16 sets
    HONE_NATIVE_BF16 itself (or deletes it to see the real hardware)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(OVERRIDE_ENV, "0")
        yield


def run_hone(
    *args: str, cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `hone ARGS` as its own process and capture its output: a fork of a server that has
    imported torch and hone already (tests/forking.py), which saves each call the imports."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    logs = Path(tempfile.gettempdir()) / f"hone-test-logs-{os.getpid()}"
    return forking.run(list(args), cwd or Path.cwd(), full_env, logs, timeout)


@pytest.fixture
def hone_cli():
    return run_hone
