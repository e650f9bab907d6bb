"""The config class each model family owns, registered by `model.name`.

A model family keeps its config dataclass next to its code (GPT's in `hone/models/gpt.py`) and
registers it here when its module is imported. The config package does not import the models
at its top (imports go downward only, and the models load torch); the first lookup of a
family's config imports `hone.models`, which registers the built-in families. A user's own
family registers its config the same way:

    @register_model_config("tiny")
    @dataclass
    class TinyConfig:
        width: int = opt(8, "units of the hidden layer", ge=1)

A family config may define `validate(self) -> None` for its cross-field rules (raising a
`ConfigError` that names the flag), and `context_length` (tokens per training window) when
it is a language model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from hone.registry import Registry

T = TypeVar("T")


@dataclasses.dataclass
class NoModelFields:
    """The config of a model family without settings of its own (linear, logistic)."""


MODEL_CONFIGS: Registry[type] = Registry("model config", "model.name")


def register_model_config(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: `cls` holds the settings of the model family `name`."""

    def decorator(cls: type[T]) -> type[T]:
        assert dataclasses.is_dataclass(cls), f"the config of model {name!r} must be a dataclass"
        MODEL_CONFIGS.add(name, cls)
        return cls

    return decorator


def _register_builtin_families() -> None:
    # A lazy import, the one upward edge: the built-in families live above the config.
    import hone.models  # noqa: F401


def model_config_class(name: str) -> type:
    """The config class of model family `name`; a family that registered none has no fields."""
    _register_builtin_families()
    return MODEL_CONFIGS.get(name) if name in MODEL_CONFIGS else NoModelFields


def model_config_classes() -> dict[str, type]:
    """Every registered family's config class, by name (sorted)."""
    _register_builtin_families()
    return {name: MODEL_CONFIGS.get(name) for name in MODEL_CONFIGS}


def field_names(config: Any) -> set[str]:
    """The field names of a family config (a class or an instance)."""
    return {f.name for f in dataclasses.fields(config)}


def families_with_key(key: str) -> list[str]:
    """The registered families that own the field `key`, sorted."""
    return [name for name, cls in model_config_classes().items() if key in field_names(cls)]


def not_applicable(key: str, name: str) -> str:
    """The one-line answer to a `model.<key>` that the family `name` does not have.

    Empty when no family owns `key` (then it is simply unknown).
    """
    owners = families_with_key(key)
    if not owners:
        return ""
    quoted = [repr(owner) for owner in owners]
    which = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    fix = f"--model.name={owners[0]}" if len(owners) == 1 else "--model.name to one of them"
    return f"model.{key} applies to model.name = {which}, not to {name!r}; remove it or set {fix}"
