"""Every loss in `LOSSES`, on every task it declares: a finite scalar with a gradient, zero (to
rounding) on perfect predictions and no more than on any other; any other task is refused
with a one-line `ConfigError` that names --loss.name."""

from __future__ import annotations

import pytest
import torch

from hone.config import LossConfig
from hone.errors import ConfigError
from hone.losses import LOSSES, build_loss

TASKS = ("regression", "classification", "binary", "lm")
BATCH, BLOCK_SIZE, NUM_CLASSES = 4, 5, 3
CONFIDENT = 30.0  # a logit this far from the rest gives probabilities within e^-30 of 0 or 1


def targets_and_perfect_outputs(task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, the model output that predicts y exactly), shaped as the engine hands them over."""
    g = torch.Generator().manual_seed(0)
    if task == "regression":
        y = torch.randn(BATCH, 2, generator=g)  # (N, target width)
        return y, y.clone()
    if task == "binary":
        y = torch.tensor([0.0, 1.0, 1.0, 0.0])  # (N,) of 0/1; the model gives (N, 1) logits
        return y, (CONFIDENT * (2 * y - 1)).unsqueeze(1)
    shape = (BATCH,) if task == "classification" else (BATCH, BLOCK_SIZE)  # lm: (B, T) ids
    y = torch.randint(0, NUM_CLASSES, shape, generator=g)
    return y, CONFIDENT * torch.nn.functional.one_hot(y, NUM_CLASSES).float()


FITS = [(name, task) for name in LOSSES.names() for task in LOSSES.get(name).tasks]
MISFITS = [(name, task) for name in LOSSES.names() for task in TASKS if (name, task) not in FITS]


def test_every_loss_declares_known_tasks() -> None:
    for name in LOSSES.names():
        tasks = LOSSES.get(name).tasks
        assert tasks and set(tasks) <= set(TASKS), (name, tasks)
    assert {task for _, task in FITS} == set(TASKS)  # no task is left without a loss


@pytest.mark.parametrize(("name", "task"), FITS)
def test_finite_scalar_with_a_gradient_and_minimal_on_perfect_predictions(
    name: str, task: str
) -> None:
    loss_fn = build_loss(LossConfig(name=name), task)
    y, perfect = targets_and_perfect_outputs(task)
    g = torch.Generator().manual_seed(1)
    out = torch.randn(perfect.shape, generator=g).requires_grad_()  # an untrained model
    loss = loss_fn(out, y)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0, loss
    loss.backward()
    assert out.grad is not None and torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0
    best = loss_fn(perfect, y)
    assert best.ndim == 0 and 0 <= best.item() < 1e-6, best
    for _ in range(5):
        worse = perfect + 0.1 * torch.randn(perfect.shape, generator=g)
        assert loss_fn(worse, y) >= best


@pytest.mark.parametrize(("name", "task"), MISFITS)
def test_refuses_a_task_outside_its_list(name: str, task: str) -> None:
    with pytest.raises(ConfigError, match="--loss.name") as refused:
        build_loss(LossConfig(name=name), task)
    assert "\n" not in str(refused.value)
