"""Evaluation: the loss and the task's metric (accuracy, r2) over a whole split."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager

import torch
from torch import nn

from hone.losses import LossFn

METRIC_OF_TASK = {
    "classification": "accuracy",
    "binary": "accuracy",
    "regression": "r2",
    "lm": "perplexity",
}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    task: str,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[None]],
) -> dict[str, float]:
    """Mean loss per sample (per token for lm) and the task metric over `batches`."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    correct = torch.zeros((), dtype=torch.float64, device=device)
    targets, outputs = [], []
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast():
            out = model(x)
        out = out.float()
        n = y.numel() if task == "lm" else len(y)
        total_loss += loss_fn(out, y).double() * n
        count += n
        if task == "classification":
            correct += (out.argmax(-1) == y).sum()
        elif task == "binary":
            correct += ((out.reshape(y.shape) > 0).to(y.dtype) == y).sum()
        elif task == "regression":
            targets.append(y.double())
            outputs.append(out.reshape(y.shape).double())
    model.train(was_training)
    assert count > 0, "evaluated an empty split"
    loss = (total_loss / count).item()
    result = {"loss": loss}
    if task in ("classification", "binary"):
        result["accuracy"] = (correct / count).item()
    elif task == "regression":
        y, out = torch.cat(targets), torch.cat(outputs)
        ss_res = ((y - out) ** 2).sum()
        ss_tot = ((y - y.mean(0)) ** 2).sum()
        result["r2"] = (1 - ss_res / ss_tot).item() if ss_tot > 0 else float("nan")
    elif task == "lm":
        result["perplexity"] = float(torch.tensor(loss).exp())
    return result


def tensor_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]
