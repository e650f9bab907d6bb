"""Tasks: what kind of target a run learns, and every rule that follows from it.

A task knows the metric it is judged by, the model spec its data implies, how its evaluation
batches are drawn, how a batch's outputs update that metric, and how raw model outputs become
predictions. The trainer, eval, predict, sample and the tuner ask the task instead of testing
a task name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from hone.data import TensorData, TokenData, WindowBatcher
from hone.data.base import Data
from hone.errors import ConfigError
from hone.models import ModelSpec

Batch = tuple[torch.Tensor, torch.Tensor]

# The validation windows of a language model are drawn once with this seed, so that every
# evaluation of a run (and `hone eval` afterwards) sees the same tokens.
EVAL_WINDOW_SEED = 1234
WHOLE_SPLIT_TOKENS = 16384  # the least tokens in a batch of a whole-split evaluation


class Task:
    """The rules of one kind of target; subclasses are registered in `TASKS`."""

    name = ""
    metric = ""  # the task's own metric, besides the loss
    splits: tuple[str, ...] = ("train", "val", "test")

    def spec(self, data: Data, context_length: int = 0) -> ModelSpec:
        assert isinstance(data, TensorData)
        return ModelSpec(data.task, data.input_shape, data.num_outputs)

    def samples(self, y: torch.Tensor) -> int:
        """How many loss terms a batch with targets `y` averages over."""
        return len(y)

    def eval_batches(
        self,
        data: Data,
        split: str,
        batch_size: int,
        context_length: int = 0,
        num_batches: int = 0,
        rank: int = 0,
        world_size: int = 1,
        grad_accum: int = 1,
    ) -> Iterable[Batch]:
        """The batches of `split` that an evaluation runs over: the whole split, in order."""
        assert isinstance(data, TensorData)
        x, y = getattr(data, split)
        return (
            (x[start : start + batch_size], y[start : start + batch_size])
            for start in range(0, len(x), batch_size)
        )

    def has_split(self, data: Data, split: str) -> bool:
        assert isinstance(data, TensorData)
        return len(getattr(data, split)[0]) > 0

    # The metric over several batches: start, add each batch, finish.
    def metric_state(self, device: torch.device) -> Any:
        return torch.zeros((), dtype=torch.float64, device=device)

    def update(self, state: Any, out: torch.Tensor, y: torch.Tensor) -> Any:
        raise NotImplementedError

    def finish(self, state: Any, count: int, loss: float) -> float:
        raise NotImplementedError

    def postprocess(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs (N, ...) to {"predictions": ..., "probabilities": ... (classifiers)}."""
        raise NotImplementedError


class Classification(Task):
    name, metric = "classification", "accuracy"

    def update(self, state: Any, out: torch.Tensor, y: torch.Tensor) -> Any:
        return state + (out.argmax(-1) == y).sum()

    def finish(self, state: Any, count: int, loss: float) -> float:
        return (state / count).item()

    def postprocess(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        probabilities = out.float().softmax(-1)
        return {"predictions": probabilities.argmax(-1), "probabilities": probabilities}


class Binary(Task):
    name, metric = "binary", "accuracy"

    def update(self, state: Any, out: torch.Tensor, y: torch.Tensor) -> Any:
        return state + ((out.reshape(y.shape) > 0).to(y.dtype) == y).sum()

    def finish(self, state: Any, count: int, loss: float) -> float:
        return (state / count).item()

    def postprocess(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        p = out.float().reshape(len(out)).sigmoid()  # probability of class 1
        return {"predictions": (p > 0.5).long(), "probabilities": p[:, None]}


class Regression(Task):
    name, metric = "regression", "r2"

    def metric_state(self, device: torch.device) -> Any:
        return ([], [])

    def update(self, state: Any, out: torch.Tensor, y: torch.Tensor) -> Any:
        state[0].append(y.double())
        state[1].append(out.reshape(y.shape).double())
        return state

    def finish(self, state: Any, count: int, loss: float) -> float:
        y, out = torch.cat(state[0]), torch.cat(state[1])
        ss_res = ((y - out) ** 2).sum()
        ss_tot = ((y - y.mean(0)) ** 2).sum()
        return (1 - ss_res / ss_tot).item() if ss_tot > 0 else float("nan")

    def postprocess(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"predictions": out.float().reshape(len(out), -1)}


class LanguageModel(Task):
    name, metric = "lm", "perplexity"
    splits = ("train", "val")

    def spec(self, data: Data, context_length: int = 0) -> ModelSpec:
        assert isinstance(data, TokenData)
        if context_length < 1:
            raise ConfigError(
                "a language model needs a context length; set --model.block_size (gpt) or "
                "--model.context_length (custom models)"
            )
        vocab = data.vocab_size
        return ModelSpec("lm", (context_length,), vocab, vocab_size=vocab)

    def samples(self, y: torch.Tensor) -> int:
        return y.numel()  # per token

    def eval_batches(
        self,
        data: Data,
        split: str,
        batch_size: int,
        context_length: int = 0,
        num_batches: int = 0,
        rank: int = 0,
        world_size: int = 1,
        grad_accum: int = 1,
    ) -> Iterable[Batch]:
        """`num_batches` fixed batches of windows, or with `num_batches = 0` the whole split.
        Under several processes each rank takes its share in training-sized micro-batches
        (equal token counts: the mean of the ranks' means is exact); one process takes each
        batch whole."""
        assert isinstance(data, TokenData)
        tokens = data.val if split == "val" else data.train
        if num_batches == 0:
            return whole_split(tokens, context_length, batch_size, rank, world_size)
        if world_size == 1:
            grad_accum = 1
        batcher = WindowBatcher(
            tokens,
            context_length,
            batch_size,
            EVAL_WINDOW_SEED,
            rank,
            world_size,
            grad_accum,
        )

        def batches() -> Iterator[Batch]:
            for _ in range(num_batches):
                yield from batcher.next_step()

        return batches()

    def has_split(self, data: Data, split: str) -> bool:
        return split in self.splits

    def update(self, state: Any, out: torch.Tensor, y: torch.Tensor) -> Any:
        return state

    def finish(self, state: Any, count: int, loss: float) -> float:
        return float(torch.tensor(loss).exp())

    def postprocess(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"predictions": out.float().argmax(-1)}


def whole_split(
    tokens: Any, context_length: int, batch_size: int, rank: int = 0, world_size: int = 1
) -> Iterator[Batch]:
    """Every token of `tokens` after the first, predicted once: consecutive windows of
    `context_length` (the last one shorter), `batch_size` windows a batch, in order.

    The first token of each window is predicted from no context, as the first token of a
    training window is. Under several processes rank r takes windows r, r + W, ...; the
    windows are cut to a multiple of W (at most W - 1 windows left out) so that every rank
    averages as many tokens and the mean of the ranks' means stays exact.
    """
    # Forward passes only: batches of at least WHOLE_SPLIT_TOKENS tokens keep the matmuls
    # large (a training batch of 12 windows evaluated 111k characters 3x slower).
    batch_size = max(batch_size, WHOLE_SPLIT_TOKENS // context_length)
    usable = len(tokens) - 1  # inputs tokens[i], targets tokens[i + 1]
    starts = np.arange(0, usable, context_length)
    if world_size > 1:
        full = starts[starts + context_length <= usable]  # equal windows only
        starts = full[: len(full) // world_size * world_size][rank::world_size]
    full_starts = starts[starts + context_length <= usable]
    offsets = np.arange(context_length + 1)
    for first in range(0, len(full_starts), batch_size):
        chunk = full_starts[first : first + batch_size]
        windows = torch.from_numpy(np.asarray(tokens[chunk[:, None] + offsets], dtype=np.int64))
        yield windows[:, :-1], windows[:, 1:]
    if len(full_starts) < len(starts):  # the tail, shorter than a window
        tail = torch.from_numpy(np.asarray(tokens[starts[-1] :], dtype=np.int64))[None]
        yield tail[:, :-1], tail[:, 1:]


TASKS: dict[str, Task] = {
    t.name: t for t in (Classification(), Binary(), Regression(), LanguageModel())
}


def task_of(data: Data) -> Task:
    return TASKS[data.task]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    loss_fn: Any,
    task: Task,
    device: torch.device,
    autocast: Any,
) -> dict[str, float]:
    """Mean loss per sample (per token for language models) and the task's metric."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    state = task.metric_state(device)
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast():
            out = model(x)
        out = out.float()
        n = task.samples(y)
        total_loss += loss_fn(out, y).double() * n
        count += n
        state = task.update(state, out, y)
    model.train(was_training)
    assert count > 0, "evaluated an empty split"
    loss = (total_loss / count).item()
    return {"loss": loss, task.metric: task.finish(state, count, loss)}
