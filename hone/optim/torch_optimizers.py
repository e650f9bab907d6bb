"""The first-order and quasi-Newton optimizers that torch.optim implements, built from the config.

`optim.weight_decay` maps onto each optimizer's own `weight_decay` (decoupled for adamw, an L2
term added to the gradient for the others), for weight matrices and embeddings only. L-BFGS has none and refuses it (use reg.l2).
Each optimizer's own keys (`optim.momentum`, ...) are its config dataclass below, registered by
name with hone.config; gd has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hone.config import OptimConfig, opt, register_optim_config
from hone.errors import ConfigError
from hone.optim.base import (
    BetasConfig,
    OptimizerKind,
    betas_field,
    check_betas,
    check_no_weight_decay,
    decay_groups,
    eps_field,
    kernel_kwargs,
    momentum_field,
    register_optimizer,
    trainable_parameters,
)


@register_optim_config("sgd")
@dataclass
class SGDConfig:
    momentum: float = momentum_field()
    nesterov: bool = opt(False, "Nesterov momentum")


@register_optim_config("adam")
@register_optim_config("adamw")
@dataclass
class AdamConfig(BetasConfig):
    betas: list[float] = betas_field()
    eps: float = eps_field()


@register_optim_config("adagrad")
@dataclass
class AdagradConfig:
    eps: float = eps_field()


@register_optim_config("rmsprop")
@dataclass
class RMSpropConfig:
    momentum: float = momentum_field()
    alpha: float = opt(0.99, "smoothing constant", gt=0, lt=1)
    eps: float = eps_field()


@register_optim_config("lbfgs")
@dataclass
class LBFGSConfig:
    history_size: int = opt(10, "history size", ge=1)
    max_iter: int = opt(20, "iterations per step", ge=1)
    line_search: str = opt("strong_wolfe", "line search", choices=["strong_wolfe", "none"])


@register_optimizer("gd", OptimizerKind(full_batch=True))
def build_gd(cfg: OptimConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """Full-batch gradient descent: SGD without momentum, fed the whole training split."""
    return torch.optim.SGD(
        decay_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        **kernel_kwargs(cfg, "gd", device),
    )


@register_optimizer("sgd")
def build_sgd(cfg: OptimConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """Mini-batch SGD with optional (Nesterov) momentum."""
    if cfg.nesterov and cfg.momentum == 0:
        raise ConfigError(
            f"optim.momentum must be > 0 with optim.nesterov=true, got {cfg.momentum}; "
            "set --optim.momentum=0.9 or --optim.nesterov=false"
        )
    return torch.optim.SGD(
        decay_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        **kernel_kwargs(cfg, "sgd", device),
    )


@register_optimizer("adam")
def build_adam(cfg: OptimConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """Adam with L2 weight decay added to the gradient."""
    return torch.optim.Adam(
        decay_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=check_betas(cfg),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        **kernel_kwargs(cfg, "adam", device),
    )


@register_optimizer("adamw")
def build_adamw(cfg: OptimConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay."""
    return torch.optim.AdamW(
        decay_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=check_betas(cfg),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        **kernel_kwargs(cfg, "adamw", device),
    )


@register_optimizer("adagrad")
def build_adagrad(
    cfg: OptimConfig, model: nn.Module, device: torch.device
) -> torch.optim.Optimizer:
    """Adagrad: per-coordinate steps shrinking with the sum of squared gradients."""
    return torch.optim.Adagrad(
        decay_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        **kernel_kwargs(cfg, "adagrad", device),
    )


@register_optimizer("rmsprop")
def build_rmsprop(
    cfg: OptimConfig, model: nn.Module, device: torch.device
) -> torch.optim.Optimizer:
    """RMSprop with smoothing constant `optim.alpha` and optional momentum."""
    return torch.optim.RMSprop(
        decay_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        alpha=cfg.alpha,
        eps=cfg.eps,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        **kernel_kwargs(cfg, "rmsprop", device),
    )


@register_optimizer("lbfgs", OptimizerKind(full_batch=True, closure=True))
def build_lbfgs(cfg: OptimConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """L-BFGS over the whole training split, stepped with a closure; wants optim.lr = 1."""
    check_no_weight_decay(cfg)
    if cfg.impl == "fused":
        kernel_kwargs(cfg, "lbfgs", device)  # raises: L-BFGS has no fused kernel
    return torch.optim.LBFGS(
        trainable_parameters(model),
        lr=cfg.lr,
        max_iter=cfg.max_iter,
        history_size=cfg.history_size,
        line_search_fn=None if cfg.line_search == "none" else cfg.line_search,
    )
