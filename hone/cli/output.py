"""What the `hone` commands print for scripts: the `--json` flag and its one encoder, and the
quiet exit when stdout's reader goes away (`hone recipes | head -1`).

With `--json` a command prints one JSON document on stdout and nothing else there; progress,
notes and warnings go to stderr as always.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from hone.errors import ExitCode


def add_json_flag(parser: Any, what: str) -> None:
    """Add `--json` to a subcommand's parser; `what` names what it prints."""
    parser.add_argument(
        "--json",
        action="store_true",
        help=f"print {what} as one JSON document on stdout, and nothing else there",
    )


def plain(value: Any) -> Any:
    """`value` as JSON's types: paths and dataclasses spelled out, and NaN/inf as null
    (strict JSON has no NaN, and jq and JavaScript's JSON.parse refuse it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if hasattr(value, "item"):  # a numpy or torch scalar
        return plain(value.item())
    return value


def print_json(data: Any) -> None:
    """Print `data` as one indented JSON document on stdout."""
    print(json.dumps(plain(data), indent=2, allow_nan=False, default=str))


def stdout_gone() -> int:
    """Answer a BrokenPipeError: the exit code, after pointing the closed stream at os.devnull.

    The interpreter flushes stdout and stderr on its way out; with the reader gone that flush
    would fail again, print "Exception ignored ... BrokenPipeError" and exit 120. Python's
    docs (the note on SIGPIPE in the `signal` module) recommend this rather than restoring
    SIGPIPE's default action, which would kill the process at any write to a closed pipe or
    socket: a client hanging up on `hone serve`, a progress bar's reader leaving in the middle
    of training. stdout is the usual stream (`hone recipes | head -1`); stderr only when its
    own pending text cannot be written (`hone doctor RUN 2>&1 | head -1`).
    """
    _to_devnull(sys.stdout)
    try:
        sys.stderr.flush()
    except BrokenPipeError:
        _to_devnull(sys.stderr)
    return ExitCode.BROKEN_PIPE


def _to_devnull(stream: TextIO) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)
