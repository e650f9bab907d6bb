"""TensorBatcher: the batches it gathers a chunk of steps at a time are the rows a per-batch
index of the epoch's order gives, on every rank and micro-batch, across epochs and resumes."""

from __future__ import annotations

import pytest
import torch

import hone.data.batching as batching
from hone.data.batching import TensorBatcher, _generator


def jitter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """An augmentation: its noise depends on the step's generator."""
    return x + torch.randn(x.shape, generator=g)


def reference_step(
    x: torch.Tensor, y: torch.Tensor, b: TensorBatcher, epoch: int, position: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One step by the definition: a slice of the epoch's order per micro-batch, jittered."""
    order = torch.randperm(len(x), generator=_generator(b.seed, epoch))
    start = position * b.batch_size
    batches = []
    for k in range(b.grad_accum):
        offset = start + (k * b.world_size + b.rank) * b.micro
        idx = order[offset : offset + b.micro]
        noise = _generator(b.seed, epoch, position + 1, k, b.rank, 7)
        batches.append((jitter(x[idx], noise), y[idx]))
    return batches


@pytest.mark.parametrize("world_size, grad_accum", [(1, 1), (1, 2), (2, 1), (2, 3)])
@pytest.mark.parametrize("gather_bytes", [1, 3000, 2**22])  # one step, a few, a whole epoch
def test_batches_are_the_rows_of_the_epoch_order(
    monkeypatch: pytest.MonkeyPatch, world_size: int, grad_accum: int, gather_bytes: int
) -> None:
    monkeypatch.setattr(batching, "GATHER_BYTES", gather_bytes)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(101, 3, 2, generator=g), torch.randint(0, 5, (101,), generator=g)
    batch_size = 2 * world_size * grad_accum
    for rank in range(world_size):
        b = TensorBatcher(x, y, batch_size, 3, rank, world_size, grad_accum, augment=jitter)
        for step in range(3 * b.steps_per_epoch + 2):  # across epoch boundaries
            epoch, position = divmod(step, b.steps_per_epoch)
            got = b.next_step()
            want = reference_step(x, y, b, epoch, position)
            assert len(got) == grad_accum
            for (gx, gy), (wx, wy) in zip(got, want, strict=True):
                assert torch.equal(gx, wx) and torch.equal(gy, wy)


def test_a_resumed_batcher_continues_with_the_same_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "GATHER_BYTES", 200)  # chunks of a few steps
    x, y = torch.arange(120.0).reshape(60, 2), torch.arange(60)
    b = TensorBatcher(x, y, 4, seed=1)
    for _ in range(20):
        b.next_step()
    state = b.state_dict()
    expected = [b.next_step() for _ in range(10)]
    resumed = TensorBatcher(x, y, 4, seed=1)
    resumed.next_step()  # a chunk gathered before the state is loaded is dropped
    resumed.load_state_dict(state)
    for want in expected:
        [(gx, gy)] = resumed.next_step()
        assert torch.equal(gx, want[0][0]) and torch.equal(gy, want[0][1])
