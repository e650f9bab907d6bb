"""Classic models: linear and logistic regression, the MLP and a small CNN."""

from __future__ import annotations

import math

import torch
from torch import nn

from hone.config import ModelConfig
from hone.errors import ConfigError
from hone.models.base import MODELS, ModelSpec

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def _features(spec: ModelSpec) -> int:
    return math.prod(spec.input_shape)


@MODELS.register("linear")
def linear(cfg: ModelConfig, spec: ModelSpec) -> nn.Module:
    """y = W x + b on the flattened input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(_features(spec), spec.num_outputs))


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
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = _features(spec)
    for _ in range(cfg.depth):
        layers += [nn.Linear(width_in, cfg.width), ACTIVATIONS[cfg.activation]()]
        if cfg.dropout:
            layers.append(nn.Dropout(cfg.dropout))
        width_in = cfg.width
    layers.append(nn.Linear(width_in, spec.num_outputs))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Conv blocks (conv, activation, 2x2 max-pool while the image is large enough), then a linear head."""

    def __init__(self, cfg: ModelConfig, spec: ModelSpec) -> None:
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
    return SmallCNN(cfg, spec)
