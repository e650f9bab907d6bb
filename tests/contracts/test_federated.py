"""Every Flower strategy in `STRATEGIES` and every partitioner in `PARTITIONERS`.

A strategy, driven round by round through hone's in-process grid by clients that each move
every weight up (by different amounts, with different numbers of examples): it asks every
client when `federated.fraction` is 1, aggregates finite weights of the same shapes that
moved up too, and its state, saved after round 2 (through safetensors + JSON, as a
checkpoint stores it) and loaded into a fresh strategy, aggregates round 3 exactly as the
strategy that never stopped.

A partitioner, on a small labelled table: disjoint non-empty shares that cover the training
split, label counts that add up to each share, the same shares again for the same seed; a
token stream is divided into contiguous text, or refused in one line naming the flag.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("flwr", reason="federated training needs the 'federated' extra")
pytest.importorskip("flwr_datasets", reason="federated training needs the 'federated' extra")

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from hone.checkpoint import flatten, unflatten  # noqa: E402
from hone.config import load_config  # noqa: E402
from hone.data import TensorData, TokenData  # noqa: E402
from hone.data.text.tokenizers import CharTokenizer  # noqa: E402
from hone.errors import ConfigError  # noqa: E402
from hone.federate import protocol as p  # noqa: E402
from hone.federate.grid import InProcessGrid  # noqa: E402
from hone.federate.partition import PARTITIONERS, TOKEN_BLOCK, partition  # noqa: E402
from hone.federate.settings import FederatedConfig  # noqa: E402
from hone.federate.strategies import (  # noqa: E402
    STRATEGIES,
    build_strategy,
    load_strategy_state,
    strategy_state,
)

NUM_CLIENTS = 4
GLOBAL = {"weight": torch.zeros(3, 2), "bias": torch.zeros(2)}

# ----------------------------------------------------------------- strategies
client_app = ClientApp()


@client_app.train()
def _train(message: Message, context: Context) -> Message:
    """Client i moves every weight up by 0.1 * (i + 1) and reports 10 * (i + 1) examples."""
    client = int(context.node_config[p.PARTITION_ID])
    weights = message.content.array_records[p.ARRAYS].to_torch_state_dict()
    moved = {k: v + 0.1 * (client + 1) for k, v in weights.items()}
    metrics = MetricRecord({p.NUM_EXAMPLES: 10 * (client + 1), p.TRAIN_LOSS: 1.0 / (client + 1)})
    content = RecordDict({p.ARRAYS: ArrayRecord(moved), p.METRICS: metrics})
    return Message(content=content, reply_to=message)


def fed(name: str) -> FederatedConfig:
    return FederatedConfig(clients=NUM_CLIENTS, strategy=name)


def run_round(strategy: Any, weights: dict[str, torch.Tensor], server_round: int) -> Any:
    """One round as hone's server runs it: (the aggregated weights, the clients asked)."""
    random.seed(server_round)  # Flower samples with the global `random`; the server seeds it
    grid = InProcessGrid(client_app, NUM_CLIENTS)
    config = ConfigRecord({p.HONE_CONFIG: ""})
    messages = list(strategy.configure_train(server_round, ArrayRecord(weights), config, grid))
    replies = list(grid.send_and_receive(messages))
    aggregated, _ = strategy.aggregate_train(server_round, replies)
    return aggregated.to_torch_state_dict(), len(messages)


def test_the_config_lists_exactly_the_registered_strategies() -> None:
    (field,) = [f for f in dataclasses.fields(FederatedConfig) if f.name == "strategy"]
    listed = field.metadata["help"].split(":", 1)[1].replace(" ", "").split(",")
    assert sorted(listed) == STRATEGIES.names()
    with pytest.raises(ConfigError, match="fedavg"):
        build_strategy(fed("fedsgd"))


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_rounds_move_the_weights_as_the_clients_did(name: str) -> None:
    strategy, weights = build_strategy(fed(name)), dict(GLOBAL)
    for server_round in (1, 2, 3):
        new, asked = run_round(strategy, weights, server_round)
        assert asked == NUM_CLIENTS  # fraction 1: every client
        assert new.keys() == weights.keys()
        for key, value in new.items():
            assert value.shape == weights[key].shape and torch.isfinite(value).all(), key
            assert (value > weights[key]).all(), (name, server_round, key)
        weights = new


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_state_saved_after_round_2_aggregates_round_3_the_same(name: str) -> None:
    strategy, weights = build_strategy(fed(name)), dict(GLOBAL)
    for server_round in (1, 2):
        weights, _ = run_round(strategy, weights, server_round)
    tree, tensors = flatten({"strategy": strategy_state(strategy)})
    state = unflatten(json.loads(json.dumps(tree, allow_nan=False)), tensors)["strategy"]
    resumed = build_strategy(fed(name))
    load_strategy_state(resumed, state)
    expected, _ = run_round(strategy, weights, 3)
    again, _ = run_round(resumed, weights, 3)
    for key in expected:
        assert torch.equal(again[key], expected[key]), (name, key)


# ----------------------------------------------------------------- partitioners
def table(num_samples: int = 60, num_classes: int = 3) -> TensorData:
    g = torch.Generator().manual_seed(0)
    train = (torch.randn(num_samples, 2, generator=g), torch.arange(num_samples) % num_classes)
    empty = (train[0][:0], train[1][:0])
    return TensorData("classification", train, empty, empty, (2,), num_classes)


def config(name: str, *overrides: str) -> Any:
    return load_config("mlp-digits", [f"federated.partition={name}", *overrides])


@pytest.mark.parametrize("name", PARTITIONERS.names())
def test_shares_are_disjoint_cover_the_split_and_repeat_with_the_seed(name: str) -> None:
    data = table()
    parts = partition(config(name), data, NUM_CLIENTS)
    assert parts.name == name and len(parts.indices) == NUM_CLIENTS
    joined = np.concatenate(parts.indices)
    assert sorted(joined.tolist()) == list(range(len(data.train[1])))  # disjoint, covering
    labels = data.train[1].numpy()
    for rows, counts in zip(parts.indices, parts.label_counts, strict=True):
        assert len(rows) > 0 and sum(counts) == len(rows)
        assert counts == np.bincount(labels[rows], minlength=3).tolist()
    again = partition(config(name), data, NUM_CLIENTS)
    assert all(np.array_equal(a, b) for a, b in zip(parts.indices, again.indices, strict=True))


@pytest.mark.parametrize("name", PARTITIONERS.names())
def test_a_token_stream_is_contiguous_text_or_one_line_naming_the_flag(name: str) -> None:
    tokens = np.arange(TOKEN_BLOCK * NUM_CLIENTS + 100, dtype=np.int64) % 7
    tokenizer = CharTokenizer("abcdefg")
    data = TokenData(tokens, tokens[:50], tokenizer, tokenizer.vocab_size)
    cfg = config(name, "model.name=gpt", "model.block_size=16")
    try:
        parts = partition(cfg, data, NUM_CLIENTS)
    except ConfigError as error:
        assert "\n" not in str(error) and "--federated.partition=" in str(error)
        return
    joined = np.concatenate(parts.indices)
    assert np.array_equal(joined, np.arange(len(tokens)))  # in order: contiguous and covering
