"""User models: `model.target = "package.module:factory"`, called with `model.kwargs`."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from torch import nn

from hone.config import ModelConfig, opt, register_model_config
from hone.errors import ConfigError
from hone.imports import import_target
from hone.models.base import MODELS, ModelSpec


@register_model_config("custom")
@dataclass
class CustomConfig:
    """`model.*` keys of a user model built by a factory function."""

    target: str = opt("", "user model factory 'package.module:factory'")
    kwargs: dict[str, Any] = opt({}, "keyword arguments passed to the user model factory")
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
    kwargs = dict(own.kwargs)
    if "spec" in inspect.signature(factory).parameters:
        kwargs["spec"] = spec
    try:
        model = factory(**kwargs)
    except TypeError as e:
        raise ConfigError(
            f"model.target {own.target!r} rejected model.kwargs {own.kwargs}: {e}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model.target {own.target!r} must return a torch.nn.Module, got {type(model).__name__}"
        )
    return model
