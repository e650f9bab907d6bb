"""Losses by name, each checked against the task of the data it is given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hone.config import LossConfig
from hone.errors import ConfigError
from hone.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossEntry:
    build: Callable[[LossConfig], LossFn]
    tasks: tuple[str, ...]  # the tasks whose targets this loss understands


LOSSES: Registry[LossEntry] = Registry("loss", "loss.name")

REGRESSION_LOSSES = "mse, mae, huber"


def _flat_ce(cfg: LossConfig) -> LossFn:
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # (N, C) for classification, (B, T, V) for language models: flatten to (rows, classes)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            target.reshape(-1),
            label_smoothing=cfg.label_smoothing,
        )

    return loss


def _bce(cfg: LossConfig) -> LossFn:
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.reshape(target.shape), target)

    return loss


LOSSES.add("mse", LossEntry(lambda cfg: F.mse_loss, ("regression",)))
LOSSES.add("mae", LossEntry(lambda cfg: F.l1_loss, ("regression",)))
LOSSES.add(
    "huber",
    LossEntry(
        lambda cfg: lambda out, y: F.huber_loss(out, y, delta=cfg.huber_delta), ("regression",)
    ),
)
LOSSES.add("cross_entropy", LossEntry(_flat_ce, ("classification", "lm")))
LOSSES.add("bce", LossEntry(_bce, ("binary",)))

_FIX = {
    "regression": f"the target is continuous; use --loss.name= one of {REGRESSION_LOSSES}",
    "classification": "the target holds class labels; use --loss.name=cross_entropy",
    "binary": "the target is 0/1; use --loss.name=bce (or --data.task=classification with cross_entropy)",
    "lm": "language models need --loss.name=cross_entropy",
}


def build_loss(cfg: LossConfig, task: str) -> LossFn:
    """The loss named by `loss.name`, or a ConfigError when it does not fit the task."""
    entry = LOSSES.get(cfg.name)
    if task not in entry.tasks:
        raise ConfigError(f"loss.name = {cfg.name!r} does not fit a {task} task: {_FIX[task]}")
    return entry.build(cfg)
