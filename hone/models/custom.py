"""User models: `model.target = "package.module:factory"` (or a class), called with
`model.args` and `model.kwargs`; modules among the arguments are recorded tables
(`{"__module__": "torch.nn:Linear", "kwargs": {...}}`, see `hone.models.recorded`)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from torch import nn

from hone.config import ModelConfig, opt, register_model_config
from hone.errors import ConfigError
from hone.imports import import_target
from hone.models.base import MODELS, ModelSpec
from hone.models.recorded import decode


@register_model_config("custom")
@dataclass
class CustomConfig:
    """`model.*` keys of a user model built by a factory function."""

    target: str = opt("", "user model factory or class 'package.module:factory'")
    kwargs: dict[str, Any] = opt({}, "keyword arguments passed to the user model factory")
    args: list[Any] = opt([], "positional arguments passed to it first (nn.Sequential's layers)")
    context_length: int = opt(
        0, "tokens per training window when the model is a language model", ge=0
    )

    def validate(self) -> None:
        if ":" not in self.target:
            raise ConfigError(
                f"model.name = 'custom' needs --model.target=package.module:factory, got {self.target!r}"
            )


@MODELS.register("custom")
def custom(cfg: ModelConfig, spec: ModelSpec) -> nn.Module:
    """Call the user's factory with `model.kwargs`, plus `spec` if the factory accepts it."""
    own: CustomConfig = cfg.arch
    factory = import_target(own.target, "model.target")
    args = decode(list(own.args), "model.args")
    kwargs = decode(dict(own.kwargs), "model.kwargs")
    if "spec" in inspect.signature(factory).parameters and "spec" not in kwargs:
        kwargs["spec"] = spec
    try:
        model = factory(*args, **kwargs)
    except TypeError as e:
        raise ConfigError(
            f"model.target {own.target!r} rejected model.kwargs {own.kwargs}: {e}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model.target {own.target!r} must return a torch.nn.Module, got {type(model).__name__}"
        )
    return model
