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
        # A user's task has no built-in loss: it is handed one, or its Task.loss builds it.
        fix = _FIX.get(task, "pass the loss itself (hone.Trainer(loss=...)) or override Task.loss")
        raise ConfigError(f"loss.name = {cfg.name!r} does not fit a {task} task: {fix}")
    return entry.build(cfg)


def distillation_loss(
    base: LossFn, temperature: float = 2.0, alpha: float = 0.5
) -> Callable[..., torch.Tensor]:
    """Knowledge distillation (Hinton et al., 2015) for classifiers and language models:
    `alpha` x the KL divergence from the teacher's to the student's softened distribution
    (times temperature^2, which keeps its gradients on the scale of the hard loss) plus
    `1 - alpha` x the ordinary loss on the labels. Called as loss(student, y, teacher)."""
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ConfigError(
            f"distillation needs temperature > 0 and 0 <= alpha <= 1, got {temperature} and {alpha}"
        )

    def loss(student: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        classes = student.shape[-1]
        log_student = F.log_softmax(student.reshape(-1, classes) / temperature, dim=-1)
        log_teacher = F.log_softmax(teacher.reshape(-1, classes).float() / temperature, dim=-1)
        soft = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
        return alpha * temperature**2 * soft + (1 - alpha) * base(student, target)

    return loss
