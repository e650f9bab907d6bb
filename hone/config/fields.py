"""The config field helper shared by every section and every component's own config."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


def opt(default: Any, help: str, **checks: Any) -> Any:
    """A config field with its help text and range checks (ge, gt, le, lt, choices).

    The checks are applied when a config is loaded, so a bad value is answered with one line
    that names the flag to fix.
    """
    if isinstance(default, list | dict):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})


def field_default(f: dataclasses.Field[Any]) -> Any:
    """A field's default value (a fresh one for list and dict fields)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default
