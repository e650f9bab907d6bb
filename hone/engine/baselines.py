"""What a run's numbers are measured against: the loss of a prediction that knows nothing but
the targets, and the scale of the inputs the model sees (the training statistics' run record,
read by `hone doctor`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer


def uniform_loss(trainer: Trainer) -> float | None:
    """The loss of a prediction that knows nothing but the targets' distribution: ln C for C
    classes (the vocabulary of a language model), ln 2 for binary labels, the targets'
    variance for MSE (predicting their mean); None for a loss hone does not know."""
    name, data = trainer.cfg.loss.name, trainer.data
    if trainer.task.name == "lm":
        return math.log(getattr(data, "vocab_size", 0) or 1)
    y = data.train[1].float()  # type: ignore[union-attr]
    if name == "cross_entropy":
        return math.log(trainer.spec.num_outputs)
    if name == "bce":
        return math.log(2.0)
    y = y.reshape(len(y), -1)
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
    if trainer.task.name == "lm" or trainer.cfg.loss.name != "mse":
        return None
    return float(trainer.data.train[1].float().square().mean())  # type: ignore[union-attr]


def input_scale(trainer: Trainer) -> dict[str, Any] | None:
    """How the training inputs the model sees are scaled, feature by feature."""
    if trainer.task.name == "lm":
        return None
    x = trainer.data.train[0].flatten(1).float()  # type: ignore[union-attr]
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
