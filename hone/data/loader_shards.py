"""A user's loader under several processes: each rank loads its part of every global batch.

hone's `train.batch_size` is the global batch whatever the number of processes (the arrays'
batcher cuts each batch into `world_size` rank shards), so a run on N processes takes the
steps one process would. A user's loader keeps that rule: its batch size is the global
batch, and each rank's loader yields batches of `batch_size / world_size` samples of the
same order, through torchdata's `StatefulDistributedSampler` (the library's sampler for
this, which checkpoints its position). That sampler deals the order out round-robin (rank
r takes samples r, r + N, r + 2N, ...); cut into batches of `batch_size / N` per rank, the
ranks' k-th batches are together the order's k-th `batch_size` samples, the batch one
process draws. The order is `train.seed`'s for every rank (a shuffling loader's own
generator is one process's: the ranks must agree), a new one each epoch
(`LoaderBatcher` calls `set_epoch`).

Only a loader whose order hone can deal out is sharded: a map-style dataset read in order
or shuffled. A sampler or batch sampler of the user's, an IterableDataset and a plain
iterable of batches are refused in one line: each rank would read the same batches.
"""

from __future__ import annotations

from typing import Any

import torch

from hone.data.loaders import common_arguments, stateful
from hone.errors import ConfigError

_FIX = "hand in a DataLoader over a map-style Dataset (shuffled or not), a Dataset or (x, y) arrays"


def rank_shard(loader: Any, rank: int, world_size: int, seed: int) -> Any:
    """`loader` (what hone.data.loaders.as_loader made of the user's training data) as
    this rank's StatefulDataLoader: `loader.batch_size / world_size` samples a batch."""
    from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler

    name = type(loader).__name__
    if not isinstance(loader, DataLoader):
        raise ConfigError(
            f"train_data ({name}) is an iterable of batches, which every process would read "
            f"whole; for {world_size} processes {_FIX}"
        )
    if isinstance(loader.dataset, IterableDataset):
        raise ConfigError(
            f"train_data reads an IterableDataset ({type(loader.dataset).__name__}), which "
            f"every process would read whole; for {world_size} processes {_FIX}"
        )
    from torchdata.stateful_dataloader.sampler import (  # type: ignore[import-untyped]
        RandomSampler as StatefulRandomSampler,
    )
    from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

    sampler = loader.sampler  # as_loader's shuffling loaders hold torchdata's RandomSampler
    shuffled = isinstance(sampler, RandomSampler | StatefulRandomSampler)
    shuffle = shuffled and not getattr(sampler, "replacement", False)
    own = ""
    if loader.batch_size is None:
        own = f"a batch_sampler of its own ({type(loader.batch_sampler).__name__})"
    elif not (shuffle or isinstance(sampler, SequentialSampler)):
        own = f"a sampler of its own ({type(sampler).__name__})"
    if own:
        raise ConfigError(
            f"train_data draws its batches with {own}, which hone cannot deal out over "
            f"{world_size} processes; {_FIX}"
        )
    batch = loader.batch_size
    assert batch is not None  # refused above
    if batch % world_size:
        raise ConfigError(
            f"train_data's batches of {batch} samples do not split evenly over {world_size} "
            f"processes; use a batch size that {world_size} divides "
            f"(batch_size={max(world_size, batch // world_size * world_size)})"
        )
    share = StatefulDistributedSampler(
        loader.dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
    )
    workers = torch.Generator()  # the workers' base seeds, as hone.data.loaders._shuffled's
    workers.manual_seed(seed + 1 + rank)  # a rank's own: its workers draw their own numbers
    return stateful(
        loader.dataset,
        batch_size=batch // world_size,
        sampler=share,
        drop_last=loader.drop_last,
        generator=workers,
        **common_arguments(loader),
    )
