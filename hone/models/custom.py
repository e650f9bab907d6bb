"""User models: `model.target = "package.module:factory"`, called with `model.kwargs`."""

from __future__ import annotations

import inspect

from torch import nn

from hone.config import ModelConfig
from hone.errors import ConfigError
from hone.imports import import_target
from hone.models.base import MODELS, ModelSpec


@MODELS.register("custom")
def custom(cfg: ModelConfig, spec: ModelSpec) -> nn.Module:
    """Call the user's factory with `model.kwargs`, plus `spec` if the factory accepts it."""
    factory = import_target(cfg.target, "model.target")
    kwargs = dict(cfg.kwargs)
    if "spec" in inspect.signature(factory).parameters:
        kwargs["spec"] = spec
    try:
        model = factory(**kwargs)
    except TypeError as e:
        raise ConfigError(
            f"model.target {cfg.target!r} rejected model.kwargs {cfg.kwargs}: {e}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model.target {cfg.target!r} must return a torch.nn.Module, got {type(model).__name__}"
        )
    return model
