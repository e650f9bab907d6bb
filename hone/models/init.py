"""Weight initialization schemes applied after a model is built."""

from __future__ import annotations

from torch import nn

from hone.config import ModelConfig


def initialize(model: nn.Module, cfg: ModelConfig) -> None:
    """Re-initialize the weights of linear and conv layers by `model.init`; zero biases on request."""
    for module in model.modules():
        if not isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d):
            continue
        weight = module.weight
        match cfg.init:
            case "default":
                pass
            case "xavier_uniform":
                nn.init.xavier_uniform_(weight)
            case "xavier_normal":
                nn.init.xavier_normal_(weight)
            case "kaiming_uniform":
                nn.init.kaiming_uniform_(weight, nonlinearity="relu")
            case "kaiming_normal":
                nn.init.kaiming_normal_(weight, nonlinearity="relu")
            case "normal":
                nn.init.normal_(weight, std=cfg.init_std)
            case _:
                raise AssertionError(cfg.init)
        if cfg.zero_bias and module.bias is not None:
            nn.init.zeros_(module.bias)
