"""What a run's numbers are measured against: the loss of a prediction that knows nothing but
the targets, and the scale of the inputs the model sees (the training statistics' run record,
read by `hone doctor`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hone.data import TokenData
from hone.data.base import ExampleData

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer


def training_sample(trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The training split in memory, or a sample of a loader's (hone.data.loaders)."""
    data = trainer.data
    sample = getattr(data, "sample", None)
    if sample is not None:
        return sample()  # type: ignore[no-any-return]
    return data.train  # type: ignore[return-value]


def uniform_loss(trainer: Trainer) -> float | None:
    """The loss of a prediction that knows nothing but the targets' distribution: ln C for C
    classes (the vocabulary of a language model), ln 2 for binary labels, the targets'
    variance for MSE (predicting their mean); None for a loss hone does not know."""
    name = trainer.cfg.loss.name
    if name == "cross_entropy":  # a language model's outputs are its vocabulary
        return math.log(trainer.spec.num_outputs)
    if name == "bce":
        return math.log(2.0)
    xy = training_sample(trainer)
    if xy is None:
        return None
    y = xy[1].float().reshape(len(xy[1]), -1)
    if name == "mse":
        return float(y.var(0, unbiased=False).mean())
    if name == "mae":
        return float((y - y.median(0).values).abs().mean())
    if name == "huber":
        target = y.mean(0, keepdim=True).expand_as(y)
        return float(nn.functional.huber_loss(target, y, delta=trainer.cfg.loss.huber_delta))
    return None


def zero_loss(trainer: Trainer) -> float | None:
    """MSE of predicting 0 (the mean square of the targets): where a fresh regression model
    starts; None for other losses."""
    if trainer.cfg.loss.name != "mse":
        return None
    xy = training_sample(trainer)
    return None if xy is None else float(xy[1].float().square().mean())


def input_scale(trainer: Trainer) -> dict[str, Any] | None:
    """How the training inputs the model sees are scaled, feature by feature."""
    if isinstance(trainer.data, TokenData | ExampleData):  # token ids have no scale
        return None
    xy = training_sample(trainer)
    if xy is None or not xy[0].is_floating_point():
        return None
    x = xy[0].flatten(1).float()
    std, mean = x.std(0, unbiased=False), x.mean(0)
    varying = std > 0
    if not bool(varying.any()):
        return None
    std_v = std[varying]
    return {
        "normalize": trainer.cfg.data.normalize,
        "num_features": int(x.shape[1]),
        "std_max": float(std_v.max()),
        "std_min": float(std_v.min()),
        "std_median": float(std_v.median()),
        "abs_mean_max": float(mean[varying].abs().max()),
        "abs_max": float(x.abs().max()),
    }
