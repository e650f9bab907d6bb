"""Dividing the training split among clients, through flwr-datasets' partitioners.

Every client builds the same data from the same config and takes its own partition: the
partitioning is a pure function of (data, federated.partition, its settings, the number of
clients, federated.partition_seed), so no index ever travels between machines. The local
data is wrapped in an in-memory `datasets.Dataset` of sample indices and labels (nothing is
downloaded) and handed to the partitioner the config names:

    iid           a seeded shuffle, then equal contiguous shards (IidPartitioner)
    dirichlet     per class, shares drawn from Dirichlet(alpha) (DirichletPartitioner)
    pathological  each client holds `classes_per_client` classes (PathologicalPartitioner)
    shards        equal contiguous shards in data order: a token stream's contiguous text

Validation and test stay with the server: a client's data is its training partition only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hone.config import Config
from hone.data import TensorData, TokenData
from hone.data.base import Data
from hone.engine.tasks import task_of
from hone.errors import ConfigError
from hone.federate.settings import FederatedConfig
from hone.registry import Registry

# A token stream is partitioned in blocks of this many tokens (the rows the partitioner sees);
# a client's text is then one contiguous run of blocks.
TOKEN_BLOCK = 1024

# (federated config, number of clients) -> a flwr-datasets Partitioner
PartitionerBuilder = Callable[[FederatedConfig, int], Any]
PARTITIONERS: Registry[PartitionerBuilder] = Registry("partitioner", "federated.partition")


@PARTITIONERS.register("iid")
def _iid(fed: FederatedConfig, num_clients: int) -> Any:
    from flwr_datasets.partitioner import IidPartitioner  # type: ignore[import-untyped]

    return IidPartitioner(num_partitions=num_clients)


@PARTITIONERS.register("shards")
def _shards(fed: FederatedConfig, num_clients: int) -> Any:
    from flwr_datasets.partitioner import IidPartitioner  # type: ignore[import-untyped]

    return IidPartitioner(num_partitions=num_clients)  # on the unshuffled rows: contiguous


@PARTITIONERS.register("dirichlet")
def _dirichlet(fed: FederatedConfig, num_clients: int) -> Any:
    from flwr_datasets.partitioner import DirichletPartitioner  # type: ignore[import-untyped]

    # min_partition_size=1: a client with a handful of samples is what small alphas produce;
    # it trains on a smaller batch (hone.federate.client) rather than being redrawn 10 times.
    return DirichletPartitioner(
        num_partitions=num_clients,
        partition_by="label",
        alpha=fed.alpha,
        min_partition_size=1,
        seed=fed.partition_seed,
    )


@PARTITIONERS.register("pathological")
def _pathological(fed: FederatedConfig, num_clients: int) -> Any:
    from flwr_datasets.partitioner import PathologicalPartitioner  # type: ignore[import-untyped]

    # first-deterministic (McMahan et al.'s setup): client i surely holds class i mod C, so
    # every class is held by someone when there are at least as many clients as classes.
    return PathologicalPartitioner(
        num_partitions=num_clients,
        partition_by="label",
        num_classes_per_partition=fed.classes_per_client,
        class_assignment_mode="first-deterministic",
        seed=fed.partition_seed,
    )


def partition_name(fed: FederatedConfig, data: Data) -> str:
    """The partitioner `auto` stands for: iid for samples, contiguous shards for text."""
    if fed.partition != "auto":
        return fed.partition
    return "shards" if isinstance(data, TokenData) else "iid"


@dataclass
class Partitioning:
    """Which rows of the training split each client holds (sample indices, or token ranges
    for a token stream), and the label histogram of each."""

    name: str
    indices: list[np.ndarray]  # per client: sorted sample indices, or token positions
    label_counts: list[list[int]]  # per client: samples per class ([] without labels)


def partition(cfg: Config, data: Data, num_clients: int) -> Partitioning:
    """Divide `data`'s training split among `num_clients` clients as `cfg.federated` says."""
    fed = cfg.federated
    name = partition_name(fed, data)
    if isinstance(data, TokenData):
        return _partition_tokens(fed, data, name, num_clients, cfg.model.context_length)
    assert isinstance(data, TensorData)
    y = data.train[1]
    num_classes = task_of(data).num_classes(data.num_outputs)
    labeled = num_classes > 0
    if name in ("dirichlet", "pathological") and not labeled:
        raise ConfigError(
            f"federated.partition = {name!r} divides by class, and this data set's task is "
            f"{data.task}; set --federated.partition=iid or shards"
        )
    check_enough(data, num_clients, cfg.model.context_length)
    labels = y.long().numpy() if labeled else np.zeros(len(y), dtype=np.int64)
    rows = _partition_rows(fed, name, num_clients, labels)
    counts = [np.bincount(labels[idx], minlength=num_classes).tolist() for idx in rows]
    return Partitioning(name, rows, counts if labeled else [[] for _ in rows])


def check_enough(data: Data, num_clients: int, context: int = 0) -> None:
    """A ConfigError unless every client can get some training data: a sample each, or a
    block of text longer than a context window."""
    if isinstance(data, TokenData):
        num_tokens = len(data.train)
        if num_tokens // TOKEN_BLOCK < num_clients or num_tokens // num_clients <= context + 1:
            raise ConfigError(
                f"federated.clients ({num_clients}) is too many for {num_tokens} training "
                f"tokens: each client needs {TOKEN_BLOCK} and more than model.block_size + 1 "
                f"({context + 1}); lower --federated.clients"
            )
        return
    assert isinstance(data, TensorData)
    num_samples = len(data.train[1])
    if num_samples < num_clients:
        raise ConfigError(
            f"federated.clients ({num_clients}) is more than the {num_samples} training "
            f"samples; set --federated.clients={num_samples} or fewer"
        )


def _partition_rows(
    fed: FederatedConfig, name: str, num_clients: int, labels: np.ndarray
) -> list[np.ndarray]:
    """The rows of each client: a table of (index, label) through the named partitioner."""
    from datasets import Dataset  # type: ignore[import-untyped]

    table = Dataset.from_dict({"index": np.arange(len(labels)), "label": labels})
    if name == "iid":
        table = table.shuffle(seed=fed.partition_seed)
    partitioner = PARTITIONERS.get(name)(fed, num_clients)
    partitioner.dataset = table
    try:
        parts = [partitioner.load_partition(i)["index"] for i in range(num_clients)]
    except ValueError as e:  # flwr-datasets' own check of the settings, e.g. too few classes
        raise ConfigError(
            f"federated.partition = {name!r} cannot divide {len(labels)} samples among "
            f"{num_clients} clients: {e}; change --federated.clients or the partition's settings"
        ) from None
    rows = [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]
    empty = [i for i, idx in enumerate(rows) if len(idx) == 0]
    if empty:
        raise ConfigError(
            f"federated.partition = {name!r} left client {empty[0]} without samples "
            f"({len(empty)} clients in all); raise --federated.alpha, lower "
            "--federated.clients, or change --federated.partition_seed"
        )
    return rows


def _partition_tokens(
    fed: FederatedConfig, data: TokenData, name: str, num_clients: int, context: int
) -> Partitioning:
    """Contiguous runs of TOKEN_BLOCK-token blocks: each client holds a stretch of text."""
    from datasets import Dataset  # type: ignore[import-untyped]

    if name != "shards":
        raise ConfigError(
            f"federated.partition = {name!r} needs samples; a token stream is divided into "
            "contiguous text: set --federated.partition=shards (or auto)"
        )
    check_enough(data, num_clients, context)
    num_tokens = len(data.train)
    num_blocks = num_tokens // TOKEN_BLOCK
    table = Dataset.from_dict({"index": np.arange(num_blocks)})
    partitioner = PARTITIONERS.get(name)(fed, num_clients)
    partitioner.dataset = table
    ranges = []
    for i in range(num_clients):
        blocks = np.asarray(partitioner.load_partition(i)["index"], dtype=np.int64)
        start = int(blocks[0]) * TOKEN_BLOCK
        # The last client also takes the tail that does not fill a block.
        end = num_tokens if i == num_clients - 1 else (int(blocks[-1]) + 1) * TOKEN_BLOCK
        ranges.append(np.arange(start, end, dtype=np.int64))
    return Partitioning(name, ranges, [[] for _ in ranges])


def client_data(data: Data, rows: np.ndarray) -> Data:
    """A client's own data: its training rows; no validation or test split of its own."""
    if isinstance(data, TokenData):
        start, end = int(rows[0]), int(rows[-1]) + 1
        return dataclasses.replace(data, train=data.train[start:end], val=data.val[:0])
    assert isinstance(data, TensorData)
    idx = torch.from_numpy(rows)
    x, y = data.train
    empty = (x[:0], y[:0])
    return dataclasses.replace(data, train=(x[idx], y[idx]), val=empty, test=empty)


def histograms(cfg: Config, data: Data, reports: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """What RUN/partitions.json holds: the partitioner, its settings and the share each client
    reported (its number of samples or tokens and its label counts), by client."""
    fed = cfg.federated
    name = partition_name(fed, data)
    settings: dict[str, Any] = {"partition_seed": fed.partition_seed}
    if name == "dirichlet":
        settings["alpha"] = fed.alpha
    if name == "pathological":
        settings["classes_per_client"] = fed.classes_per_client
    labels = list(getattr(data, "class_labels", []) or [])
    clients = [reports[i] for i in sorted(reports)]
    return {"partition": name, **settings, "class_labels": labels, "clients": clients}
