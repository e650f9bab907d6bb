"""Import user code named in a config as 'package.module:attribute'."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from hone.errors import ConfigError


def import_target(target: str, key: str) -> Callable[..., Any]:
    """Import 'package.module:attribute', with errors that name the config key to fix."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"{key} = {target!r}: cannot import {module_name!r} ({e}); check the module path and PYTHONPATH"
        ) from None
    if not attr or not hasattr(module, attr):
        raise ConfigError(
            f"{key} = {target!r}: module {module_name!r} has no attribute {attr!r}; write it as package.module:factory"
        )
    return getattr(module, attr)
