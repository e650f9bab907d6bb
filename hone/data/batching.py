"""Batches for the training loop, checkpointable without replaying any data.

The order of an epoch is a pure function of (seed, epoch) and a language-model batch a pure
function of (seed, step), so resuming restores a couple of integers instead of replaying a
loader. Each optimizer step consumes one global batch; it is cut into `grad_accum`
micro-batches, and each micro-batch into `world_size` disjoint rank shards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from hone.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]

# TensorBatcher gathers the rows of several steps at once, at most this many bytes of them.
GATHER_BYTES = 2**20


def micro_batch_size(batch_size: int, world_size: int, grad_accum: int) -> int:
    """Per-rank micro-batch size, or a ConfigError when the global batch does not divide."""
    parts = world_size * grad_accum
    if batch_size % parts:
        raise ConfigError(
            f"train.batch_size ({batch_size}) must be divisible by processes x train.grad_accum "
            f"({world_size} x {grad_accum} = {parts}); set --train.batch_size={max(parts, batch_size // parts * parts)}"
        )
    return batch_size // parts


def _generator(*keys: int) -> torch.Generator:
    g = torch.Generator()
    seed = 0
    for k in keys:  # mix keys into one 63-bit seed; any fixed injective-enough mix works
        seed = (seed * 1_000_003 + int(k) + 0x9E3779B9) % (2**63 - 1)
    g.manual_seed(seed)
    return g


class TensorBatcher:
    """Shuffled, drop-last batches over in-memory tensors, by epoch."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        grad_accum: int = 1,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    ) -> None:
        n = len(x)
        if batch_size > n:
            raise ConfigError(
                f"train.batch_size ({batch_size}) is larger than the training split ({n} samples); "
                f"set --train.batch_size={n} or less"
            )
        self.x, self.y = x, y
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size, self.grad_accum = rank, world_size, grad_accum
        self.micro = micro_batch_size(batch_size, world_size, grad_accum)
        self.augment = augment
        self.steps_per_epoch = n // batch_size
        self.epoch = 0
        self.position = 0  # batches of this epoch already consumed
        self._order: torch.Tensor | None = None
        # This rank's rows of `chunk_steps` consecutive steps, gathered at once from step
        # `_first` on: one index_select per chunk instead of a fancy index per micro-batch.
        # On the tiny MLP of bench/overhead_mlp.py, inside the loop, x[idx] took ~35 us a
        # step and a slice of the chunk ~7 us, plus ~0.5 ms per chunk (about half an epoch)
        # to gather it. The rows are copies either way: the batches are the same.
        row_bytes = x[0].numel() * x.element_size() + y[0].numel() * y.element_size()
        step_bytes = grad_accum * self.micro * row_bytes
        self.chunk_steps = max(1, min(self.steps_per_epoch, GATHER_BYTES // max(1, step_bytes)))
        self._rows: tuple[torch.Tensor, torch.Tensor] | None = None
        self._first = 0

    def _epoch_order(self) -> torch.Tensor:
        if self._order is None:
            self._order = torch.randperm(len(self.x), generator=_generator(self.seed, self.epoch))
        return self._order

    def _gather(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows from the current position to the end of its chunk, step-major."""
        steps = min(self.chunk_steps, self.steps_per_epoch - self.position)
        start = self.position * self.batch_size
        order = self._epoch_order()[start : start + steps * self.batch_size]
        # A global batch is grad_accum micro-batches, each cut into world_size rank shards.
        idx = order.view(steps, self.grad_accum, self.world_size, self.micro)[:, :, self.rank]
        idx = idx.reshape(-1)
        x, y = (
            self.x.index_select(0, idx.to(self.x.device)),
            self.y.index_select(0, idx.to(self.y.device)),
        )
        self._rows, self._first = (x, y), self.position
        return x, y

    def next_step(self) -> list[Batch]:
        """The micro-batches this rank computes for the next optimizer step."""
        if self.position == self.steps_per_epoch:
            self.epoch, self.position, self._order, self._rows = self.epoch + 1, 0, None, None
        rows = self._rows
        if rows is None or self.position >= self._first + self.chunk_steps:
            rows = self._gather()
        xs, ys = rows
        micro = self.micro
        offset = (self.position - self._first) * self.grad_accum * micro
        self.position += 1
        batches = []
        for k in range(self.grad_accum):
            x = xs[offset : offset + micro]
            if self.augment is not None:
                x = self.augment(
                    x, _generator(self.seed, self.epoch, self.position, k, self.rank, 7)
                )
            batches.append((x, ys[offset : offset + micro]))
            offset += micro
        return batches

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.position / self.steps_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._rows = None


class FullBatcher:
    """The whole training split every step (gradient descent, L-BFGS, Newton)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.steps_per_epoch = 1
        self.step = 0

    def next_step(self) -> list[Batch]:
        self.step += 1
        return [(self.x, self.y)]

    @property
    def epochs_done(self) -> float:
        return float(self.step)

    @property
    def epoch(self) -> int:
        return self.step

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])


class WindowBatcher:
    """Random contiguous windows of a token stream; batch s is a function of (seed, s).

    Token windows are gathered with one vectorised numpy index per micro-batch, so the
    per-step Python work does not grow with the batch size.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        block_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        grad_accum: int = 1,
    ) -> None:
        if len(tokens) <= block_size + 1:
            raise ConfigError(
                f"the token stream ({len(tokens)} tokens) is shorter than model.block_size + 1 "
                f"({block_size + 1}); lower --model.block_size or give more text"
            )
        self.tokens, self.block_size = tokens, block_size
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size, self.grad_accum = rank, world_size, grad_accum
        self.micro = micro_batch_size(batch_size, world_size, grad_accum)
        self.offsets = np.arange(block_size + 1)
        self.step = 0
        self.steps_per_epoch = max(1, (len(tokens) - 1) // (block_size * batch_size))

    def starts(self, step: int) -> np.ndarray:
        """Window starts of the whole global batch of `step` (same on every rank)."""
        g = _generator(self.seed, step, 11)
        high = len(self.tokens) - self.block_size - 1
        return torch.randint(0, high + 1, (self.batch_size,), generator=g).numpy()

    def next_step(self) -> list[Batch]:
        starts = self.starts(self.step)
        self.step += 1
        batches = []
        for k in range(self.grad_accum):
            offset = (k * self.world_size + self.rank) * self.micro
            mine = starts[offset : offset + self.micro]
            windows = np.asarray(self.tokens[mine[:, None] + self.offsets], dtype=np.int64)
            t = torch.from_numpy(windows)  # (micro, block_size + 1)
            batches.append((t[:, :-1], t[:, 1:]))
        return batches

    @property
    def epochs_done(self) -> float:
        return self.step / self.steps_per_epoch

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])


IGNORE_INDEX = -100  # a target that counts for nothing (F.cross_entropy's default)


def pad_rows(rows: list[np.ndarray], pad_id: int, packed: bool = False) -> Batch:
    """Example rows (3, L_i) (hone.data.base.ExampleData) as one batch padded to the longest:
    inputs (B, T) token ids, or (B, 2, T) ids over positions when the rows are packed (the
    model needs the positions to keep the examples apart), and targets (B, T), -100 where
    the rows are padded."""
    T = max(row.shape[1] for row in rows)
    batch = np.empty((len(rows), 3, T), dtype=np.int64)
    batch[:, 0], batch[:, 1] = pad_id, IGNORE_INDEX
    batch[:, 2] = np.arange(T)  # never 0 past a row's end: padding starts no example of its own
    for i, row in enumerate(rows):
        batch[i, :, : row.shape[1]] = row
    inputs = torch.from_numpy(batch[:, [0, 2]] if packed else batch[:, 0])
    return inputs, torch.from_numpy(batch[:, 1])


class ExampleBatcher:
    """Shuffled, drop-last batches of example rows, by epoch, each micro-batch padded to its
    longest row; the order of an epoch is a function of (seed, epoch), as TensorBatcher's."""

    def __init__(
        self,
        rows: list[np.ndarray],
        batch_size: int,
        seed: int,
        pad_id: int,
        packed: bool = False,
        rank: int = 0,
        world_size: int = 1,
        grad_accum: int = 1,
    ) -> None:
        n = len(rows)
        if batch_size > n:
            unit = "packed rows" if packed else "examples"
            raise ConfigError(
                f"train.batch_size ({batch_size}) is larger than the training split ({n} "
                f"{unit}); set --train.batch_size={max(1, n)} or less"
            )
        self.rows, self.batch_size, self.seed = rows, batch_size, seed
        self.pad_id, self.packed = pad_id, packed
        self.rank, self.world_size, self.grad_accum = rank, world_size, grad_accum
        self.micro = micro_batch_size(batch_size, world_size, grad_accum)
        self.steps_per_epoch = n // batch_size
        self.epoch = 0
        self.position = 0  # batches of this epoch already consumed
        self._order: torch.Tensor | None = None
        # Real tokens (no padding) of the global batches drawn so far, for tokens/s: a row
        # of examples padded to the longest would count its padding as work done.
        self.real_tokens = 0

    def next_step(self) -> list[Batch]:
        """The micro-batches this rank computes for the next optimizer step."""
        if self.position == self.steps_per_epoch:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = torch.randperm(
                len(self.rows), generator=_generator(self.seed, self.epoch)
            )
        start = self.position * self.batch_size
        order = self._order[start : start + self.batch_size]
        self.position += 1
        self.real_tokens += sum(self.rows[i].shape[1] for i in order.tolist())
        # A global batch is grad_accum micro-batches, each cut into world_size rank shards.
        mine = order.view(self.grad_accum, self.world_size, self.micro)[:, self.rank]
        return [
            pad_rows([self.rows[i] for i in micro], self.pad_id, self.packed)
            for micro in mine.tolist()
        ]

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.position / self.steps_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = None


def example_batches(
    rows: list[np.ndarray], batch_size: int, pad_id: int, num_rows: int = 0, seed: int = 0
) -> Iterator[Batch]:
    """Evaluation batches of example rows: every row once, or `num_rows` of them drawn once
    with `seed` (the same rows at every evaluation); shortest first, so that rows of like
    lengths share a batch and little is padded."""
    chosen = list(range(len(rows)))
    if 0 < num_rows < len(rows):
        chosen = torch.randperm(len(rows), generator=_generator(seed, 13))[:num_rows].tolist()
    order = sorted(chosen, key=lambda i: rows[i].shape[1])
    for first in range(0, len(order), batch_size):
        yield pad_rows([rows[i] for i in order[first : first + batch_size]], pad_id)
