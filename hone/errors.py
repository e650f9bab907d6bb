"""Errors a user can act on, and the exit codes of the `hone` command.

A `UserError` carries one line that names the problem and the fix; the CLI prints it on stderr
and exits with its `exit_code` (2 for bad configuration or input). Broken internal invariants
are `assert`s, never a `UserError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Every exit code of `hone`, in one place; README.md's table lists the same ones (a test
    checks that they agree)."""

    # Success; also a run stopped by SIGTERM once its checkpoint is written (a scheduler's
    # preemption is not a failure: `--resume` continues it).
    OK = 0
    # A gate or check failed: export parity, compress --max-drop, a doctor error, tuning that
    # ended short of its trials, a distributed worker killed by a signal (a worker that exits
    # passes its own code on). Python's code for an uncaught exception is 1 too: that one
    # comes with a traceback, and is a bug.
    FAILED = 1
    # Bad configuration, command line or files: one line on stderr that names the fix.
    USER_ERROR = 2
    # Training gave up: non-finite steps again after every rollback (train.max_rollbacks).
    TRAINING_ABORTED = 3
    # 128 + SIGINT, the shell's code for Ctrl-C; training writes a checkpoint first.
    INTERRUPTED = 130
    # 128 + SIGPIPE, what a shell shows for a tool the signal ended (`yes | head -1`): stdout
    # was closed before hone finished writing, so a script can tell the output is cut short.
    BROKEN_PIPE = 141


class UserError(Exception):
    """A mistake in the user's configuration, command line or files."""

    exit_code: int = ExitCode.USER_ERROR


class ConfigError(UserError):
    """Bad configuration: unknown key, wrong type, value out of range, unknown name."""


class TrainingAborted(UserError):
    """Training cannot go on (e.g. too many non-finite steps); exit code 3."""

    exit_code = ExitCode.TRAINING_ABORTED


class ExportMismatch(UserError):
    """An exported model computes other outputs than PyTorch beyond the tolerance; exit code 1."""

    exit_code = ExitCode.FAILED


class GateFailed(UserError):
    """A compressed model lost more than the allowed metric (`--max-drop`); exit code 1.
    `report` is the comparison that failed, for the caller to show."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest option, or '' when none is close."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
