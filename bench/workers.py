"""What the benches that compare hone with another library in fresh processes share: a
worker subprocess that prints its result as JSON, and the process's resident memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set (VmRSS) or its peak so far (VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def in_subprocess(script: str, threads: int, *args: str) -> dict[str, Any]:
    """Run `script _worker ARGS` in a fresh interpreter with `threads` OpenMP threads (peak
    RSS is then the worker's own); its last line of output is its result, as JSON."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
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
