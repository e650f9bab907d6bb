"""Errors a user can act on.

A `UserError` carries one line that names the problem and the fix; the CLI prints it on stderr
and exits with its `exit_code` (2 for bad configuration or input). Broken internal invariants
are `assert`s, never a `UserError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class UserError(Exception):
    """A mistake in the user's configuration, command line or files."""

    exit_code = 2


class ConfigError(UserError):
    """Bad configuration: unknown key, wrong type, value out of range, unknown name."""


class TrainingAborted(UserError):
    """Training cannot go on (e.g. too many non-finite steps); exit code 3."""

    exit_code = 3


class ExportMismatch(UserError):
    """An exported model computes other outputs than PyTorch beyond the tolerance; exit code 1."""

    exit_code = 1


class GateFailed(UserError):
    """A compressed model lost more than the allowed metric (`--max-drop`); exit code 1.
    `report` is the comparison that failed, for the caller to show."""

    exit_code = 1

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest option, or '' when none is close."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
