"""Partitioning through flwr-datasets: disjoint shares that cover the training split, the
skew each partitioner promises, seeded, and one-line errors for what cannot be divided."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hone.config import load_config
from hone.data import TensorData, build_data
from hone.errors import ConfigError
from hone.federate.partition import check_enough, client_data, partition
from tests.federate.conftest import TINY


def digits(*overrides: str) -> tuple[object, TensorData]:
    cfg = load_config("mlp-digits", [*TINY, *overrides])
    data = build_data(cfg)
    assert isinstance(data, TensorData)
    return cfg, data


def covers(parts: list[np.ndarray], n: int) -> bool:
    joined = np.concatenate(parts)
    return len(joined) == n and len(np.unique(joined)) == n


def test_iid_gives_equal_disjoint_shares_of_every_class() -> None:
    cfg, data = digits("federated.partition=iid")
    parts = partition(cfg, data, 5)  # type: ignore[arg-type]
    n = len(data.train[1])
    assert parts.name == "iid" and covers(parts.indices, n)
    assert max(map(len, parts.indices)) - min(map(len, parts.indices)) <= 1
    assert all(min(counts) > 0 for counts in parts.label_counts)  # shuffled: every class
    assert [sum(c) for c in parts.label_counts] == [len(i) for i in parts.indices]


def test_dirichlet_is_skewed_seeded_and_changes_with_its_seed() -> None:
    cfg, data = digits("federated.partition=dirichlet", "federated.alpha=0.1")
    first = partition(cfg, data, 10)  # type: ignore[arg-type]
    again = partition(cfg, data, 10)  # type: ignore[arg-type]
    assert covers(first.indices, len(data.train[1]))
    assert all(np.array_equal(a, b) for a, b in zip(first.indices, again.indices, strict=True))
    # alpha = 0.1: most of a client's samples come from one or two classes
    top_share = [max(c) / sum(c) for c in first.label_counts]
    assert np.median(top_share) > 0.5
    cfg.federated.partition_seed = 1  # type: ignore[attr-defined]
    other = partition(cfg, data, 10)  # type: ignore[arg-type]
    assert any(not np.array_equal(a, b) for a, b in zip(first.indices, other.indices, strict=True))


def test_pathological_clients_hold_exactly_their_classes() -> None:
    cfg, data = digits("federated.partition=pathological", "federated.classes_per_client=2")
    parts = partition(cfg, data, 10)  # type: ignore[arg-type]
    assert all(sum(c > 0 for c in counts) == 2 for counts in parts.label_counts)
    # first-deterministic: client i holds class i, so every class is someone's
    assert all(parts.label_counts[i][i] > 0 for i in range(10))


def test_a_client_gets_its_rows_and_no_validation_or_test() -> None:
    cfg, data = digits()
    rows = partition(cfg, data, 4).indices[2]  # type: ignore[arg-type]
    mine = client_data(data, rows)
    assert isinstance(mine, TensorData)
    assert torch.equal(mine.train[0], data.train[0][torch.from_numpy(rows)])
    assert len(mine.val[0]) == 0 and len(mine.test[0]) == 0


def test_a_token_stream_is_divided_into_contiguous_text() -> None:
    cfg = load_config("gpt-shakespeare-char", ["model.block_size=16", "federated.partition=auto"])
    data = build_data(cfg)
    parts = partition(cfg, data, 3)
    assert parts.name == "shards"
    starts = [int(r[0]) for r in parts.indices]
    assert starts[0] == 0 and all(np.all(np.diff(r) == 1) for r in parts.indices)
    assert sum(map(len, parts.indices)) == len(data.train)  # type: ignore[arg-type]
    cfg.federated.partition = "dirichlet"
    with pytest.raises(ConfigError, match="--federated.partition=shards"):
        partition(cfg, data, 3)


@pytest.mark.parametrize(
    ("overrides", "clients", "message"),
    [
        ((), 5000, "more than the 1257 training samples"),
        (
            ("federated.partition=pathological", "federated.classes_per_client=11"),
            3,
            "cannot divide",
        ),
    ],
)
def test_what_cannot_be_divided_is_one_line_that_names_the_flag(
    overrides: tuple[str, ...], clients: int, message: str
) -> None:
    cfg, data = digits(*overrides)
    with pytest.raises(ConfigError, match=message) as error:
        partition(cfg, data, clients)  # type: ignore[arg-type]
    assert "\n" not in str(error.value) and "--federated." in str(error.value)


def test_classes_need_labels() -> None:
    cfg = load_config(
        None, ["data.name=synthetic_linear", "federated.partition=dirichlet", "train.max_steps=1"]
    )
    data = build_data(cfg)
    with pytest.raises(ConfigError, match="task is regression"):
        partition(cfg, data, 2)
    check_enough(data, 2)
