"""Classic models: linear and logistic regression, the MLP and a small CNN."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from hone.config import ModelConfig, opt, register_model_config
from hone.config.components import NoModelFields
from hone.errors import ConfigError
from hone.models.base import MODELS, ModelSpec

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


register_model_config("linear")(NoModelFields)
register_model_config("logistic")(NoModelFields)


@register_model_config("mlp")
@dataclass
class MLPConfig:
    """`model.*` keys of the MLP."""

    depth: int = opt(2, "number of hidden layers", ge=0)
    width: int = opt(128, "units per hidden layer", ge=1)
    activation: str = opt("relu", "activation", choices=list(ACTIVATIONS))
    dropout: float = opt(0.0, "dropout probability after each hidden layer", ge=0, lt=1)


@register_model_config("cnn")
@dataclass
class CNNConfig:
    """`model.*` keys of the small CNN."""

    channels: list[int] = opt([16, 32], "output channels of each conv block (conv, act, pool)")
    kernel_size: int = opt(3, "convolution kernel size", ge=1)
    activation: str = opt("relu", "activation", choices=list(ACTIVATIONS))
    dropout: float = opt(0.0, "dropout probability before the linear head", ge=0, lt=1)


def _features(spec: ModelSpec, name: str) -> int:
    """Input features per sample; token streams are refused (they need an embedding)."""
    if spec.task == "lm":
        raise ConfigError(
            f"model.name = {name!r} reads feature vectors, but the data is a token stream; "
            "set --model.name=gpt (or a custom model) for language modelling"
        )
    return math.prod(spec.input_shape)


@MODELS.register("linear")
def linear(cfg: ModelConfig, spec: ModelSpec) -> nn.Module:
    """y = W x + b on the flattened input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(_features(spec, "linear"), spec.num_outputs))


@MODELS.register("logistic")
def logistic(cfg: ModelConfig, spec: ModelSpec) -> nn.Module:
    """Logistic (binary) or multinomial (softmax) regression: a linear layer producing logits."""
    if spec.task not in ("classification", "binary"):
        raise ConfigError(
            f"model.name = 'logistic' needs class labels, but the data's task is {spec.task}; "
            "use --model.name=linear for a continuous target"
        )
    return linear(cfg, spec)


@MODELS.register("mlp")
def mlp(cfg: ModelConfig, spec: ModelSpec) -> nn.Module:
    """`depth` hidden layers of `width` units, each followed by the activation and dropout."""
    own: MLPConfig = cfg.arch
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = _features(spec, "mlp")
    for _ in range(own.depth):
        layers += [nn.Linear(width_in, own.width), ACTIVATIONS[own.activation]()]
        if own.dropout:
            layers.append(nn.Dropout(own.dropout))
        width_in = own.width
    layers.append(nn.Linear(width_in, spec.num_outputs))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Conv blocks (conv, activation, 2x2 max-pool while the image is large enough), then a linear head."""

    def __init__(self, cfg: CNNConfig, spec: ModelSpec) -> None:
        super().__init__()
        if len(spec.input_shape) == 2:
            spec = ModelSpec(spec.task, (1, *spec.input_shape), spec.num_outputs)
        if len(spec.input_shape) != 3:
            raise ConfigError(
                f"model.name = 'cnn' needs image data (channels, height, width), got samples of shape "
                f"{spec.input_shape}; use --model.name=mlp for tabular data"
            )
        channels, height, width = spec.input_shape
        self.image_shape = (channels, height, width)
        blocks: list[nn.Module] = []
        for out in cfg.channels:
            blocks += [
                nn.Conv2d(channels, out, cfg.kernel_size, padding=cfg.kernel_size // 2),
                ACTIVATIONS[cfg.activation](),
            ]
            if min(height, width) >= 4:
                blocks.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = out
        self.features = nn.Sequential(*blocks)
        head: list[nn.Module] = [nn.Flatten()]
        if cfg.dropout:
            head.append(nn.Dropout(cfg.dropout))
        head.append(nn.Linear(channels * height * width, spec.num_outputs))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.image_shape)  # (B, C, H, W)
        return self.head(self.features(x))


@MODELS.register("cnn")
def cnn(cfg: ModelConfig, spec: ModelSpec) -> nn.Module:
    return SmallCNN(cfg.arch, spec)
