"""Models by name: classic models, the GPT, the Llama family and user modules."""

from __future__ import annotations

from torch import nn

from hone.config import ModelConfig
from hone.models import classic, custom, gpt, llama, recorded  # noqa: F401  (register the models)
from hone.models.base import MODELS, ModelSpec
from hone.models.init import initialize


def build_model(cfg: ModelConfig, spec: ModelSpec) -> nn.Module:
    """Build the model named by `model.name` for data of shape `spec`, then initialize it.

    Models with their own initialization scheme (the GPT) skip `model.init = 'default'`.
    """
    model = MODELS.get(cfg.name)(cfg, spec)
    initialize(model, cfg)
    return model


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "ModelSpec", "build_model", "num_parameters"]
