"""Errors a user can act on.

A `UserError` carries one line that names the problem and the fix; the CLI prints it on stderr
and exits with its `exit_code` (2 for bad configuration or input). Broken internal invariants
are `assert`s, never a `UserError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's configuration, command line or files."""

    exit_code = 2


class ConfigError(UserError):
    """Bad configuration: unknown key, wrong type, value out of range, unknown name."""


class TrainingAborted(UserError):
    """Training cannot go on (e.g. too many non-finite steps); exit code 3."""

    exit_code = 3


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest option, or '' when none is close."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
