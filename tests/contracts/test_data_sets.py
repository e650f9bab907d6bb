"""Every data set in `DATASETS`, built through `load_config` and `build_data` on inputs the test
writes itself: disjoint splits sized by data.val_fraction / data.test_fraction, the dtypes and
shapes the engine expects for the task, the same split for the same data.split_seed, and token
ids inside the vocabulary."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from hone.config import DataConfig, load_config
from hone.config.components import DATA_SETS
from hone.data import DATASETS, Data, TensorData, TokenData, build_data
from hone.data.base import ExampleData
from hone.data.batching import IGNORE_INDEX
from tests.data.test_data_images import write_mnist
from tests.data.test_data_tabular import write_csv
from tests.pretrained.test_chat_data import write_chat_tokenizer

VAL_FRACTION, TEST_FRACTION = 0.2, 0.1
TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(200))


@dataclass(frozen=True)
class Case:
    """How to build one data set: files written under tmp_path, then config overrides."""

    make: Callable[[Path], list[str]]  # writes the inputs, returns the data.* overrides
    task: str  # the task the built data must have
    num_samples: int = 0  # samples split by the fractions (in-memory data sets)
    num_test_samples: int = 0  # a test split of its own files (IDX t10k), not carved out


def csv_case(tmp: Path) -> list[str]:
    rng = np.random.default_rng(0)
    rows = [f"{a:.6f},{b:.6f},{a - 2 * b:.6f}" for a, b in rng.normal(size=(40, 2))]
    path = write_csv(tmp / "table.csv", "a,b,target", rows)
    return [f"data.path={path}", "data.task=regression"]


def npz_case(tmp: Path) -> list[str]:
    x = np.random.default_rng(0).normal(size=(40, 3))
    np.savez(tmp / "arrays.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    return [f"data.path={tmp / 'arrays.npz'}", "data.task=binary"]


def mnist_case(tmp: Path) -> list[str]:
    write_mnist(tmp, gz_test=True)  # 40 train and 10 t10k images of 6 x 5 pixels
    return [f"data.path={tmp}"]


def text_case(tmp: Path) -> list[str]:
    (tmp / "corpus.txt").write_text(TEXT)
    return [f"data.path={tmp / 'corpus.txt'}", "data.tokenizer=char"]


def tokens_case(tmp: Path) -> list[str]:
    (np.arange(500, dtype=np.uint16) * 7 % 23).tofile(tmp / "tokens.bin")
    return [f"data.path={tmp / 'tokens.bin'}"]


def chat_case(tmp: Path) -> list[str]:
    lines = [
        {"prompt": f"Question {i}: " + "why? " * (i % 5), "completion": f"Answer {i}."}
        for i in range(40)
    ]
    (tmp / "chat.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return [
        "model.name=llama",
        "model.block_size=96",
        f"data.path={tmp / 'chat.jsonl'}",
        f"data.tokenizer_path={write_chat_tokenizer(tmp / 'tokenizer')}",
    ]


CASES: dict[str, Case] = {
    "csv": Case(csv_case, "regression", num_samples=40),
    "npz": Case(npz_case, "binary", num_samples=40),
    "custom": Case(
        lambda tmp: ["data.target=tests.contracts.user_data:factory", "data.kwargs.num_samples=40"],
        "classification",
        num_samples=40,
    ),
    "digits": Case(lambda tmp: [], "classification", num_samples=1797),
    "mnist": Case(mnist_case, "classification", num_samples=40, num_test_samples=10),
    "fashion_mnist": Case(mnist_case, "classification", num_samples=40, num_test_samples=10),
    "synthetic_linear": Case(
        lambda tmp: ["data.num_samples=50", "data.num_features=3"], "regression", num_samples=50
    ),
    "text": Case(text_case, "lm"),
    "tokens": Case(tokens_case, "lm"),
    "shakespeare": Case(lambda tmp: ["data.tokenizer=byte"], "lm"),  # byte: nothing to train
    "chat": Case(chat_case, "lm", num_samples=40),
}


# The data sets that hold no data and refuse to build: the one a run trained on data handed
# in from Python records (tests/engine/test_recorded.py checks its message), and a pretrained
# checkpoint's (tests/pretrained/test_commands.py).
RECORD_ONLY = ("checkpoint", "python")
# The data sets above hone.data (chat, in hone.finetune) register when the config first looks
# data sets up: look them up now, so that every one is collected.
DATA_SETS.classes()
BUILT = [name for name in DATASETS.names() if name not in RECORD_ONLY]


def case(name: str) -> Case:
    assert name in CASES, f"data set {name!r} has no contract: add it to CASES"
    return CASES[name]


def cache_dir(name: str, folder: Path) -> list[str]:
    """data.cache_dir for the data sets that cache their token streams (only they have it)."""
    return [f"data.cache_dir={folder}"] if hasattr(DataConfig(name=name), "cache_dir") else []


def build(name: str, tmp: Path, *extra: str) -> Data:
    overrides = [
        "train.max_steps=1",
        f"data.name={name}",
        f"data.val_fraction={VAL_FRACTION}",
        f"data.test_fraction={TEST_FRACTION}",
        *cache_dir(name, tmp / "cache"),
        *case(name).make(tmp),
        *extra,
    ]
    return build_data(load_config(None, overrides))


def rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


def check_tensor_data(data: TensorData, c: Case) -> None:
    splits = {"train": data.train, "val": data.val, "test": data.test}
    # Sizes: val and test by their fractions (to a sample of rounding), train the rest.
    sizes = {name: len(x) for name, (x, _) in splits.items()}
    assert all(len(x) == len(y) for x, y in splits.values()), sizes
    assert sizes["train"] + sizes["val"] == c.num_samples - (
        0 if c.num_test_samples else sizes["test"]
    ), sizes
    assert abs(sizes["val"] - VAL_FRACTION * c.num_samples) <= 1, sizes
    if c.num_test_samples:
        assert sizes["test"] == c.num_test_samples, sizes
    else:
        assert abs(sizes["test"] - TEST_FRACTION * c.num_samples) <= 1, sizes
    # Disjoint: every sample the test writes is distinct, so no row may appear twice.
    seen = [rows(x) for x, _ in splits.values()]
    assert sum(len(s) for s in seen) == len(set().union(*seen)) == sum(sizes.values())
    for x, y in splits.values():
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == data.input_shape
        assert torch.isfinite(x).all()
        if data.task == "classification":
            assert y.dtype == torch.int64 and y.ndim == 1 and data.num_outputs >= 2
            assert 0 <= int(y.min()) and int(y.max()) < data.num_outputs
        elif data.task == "binary":
            assert y.dtype == torch.float32 and y.ndim == 1 and data.num_outputs == 1
            assert set(y.tolist()) <= {0.0, 1.0}
        else:
            assert data.task == "regression", data.task
            assert y.dtype == torch.float32 and y.shape == (len(x), data.num_outputs)
            assert torch.isfinite(y).all()


def check_token_data(data: TokenData) -> None:
    num_train, num_val = len(data.train), len(data.val)
    assert num_train > 0 and num_val > 0
    # Contiguous split: val is the tail, about data.val_fraction of the stream (cut at a line).
    assert abs(num_val / (num_train + num_val) - VAL_FRACTION) < 0.02, (num_train, num_val)
    assert not np.shares_memory(data.train, data.val)
    assert data.tokenizer.vocab_size <= data.vocab_size
    for ids in (data.train, data.val):
        assert ids.ndim == 1 and ids.dtype.kind in "iu", ids.dtype
        assert 0 <= int(ids.min()) and int(ids.max()) < data.vocab_size


def check_example_data(data: ExampleData, c: Case) -> None:
    # Examples are split by data.val_fraction; each a row (ids, targets, positions).
    assert len(data.train) + len(data.val) == c.num_samples
    assert abs(len(data.val) - VAL_FRACTION * c.num_samples) <= 1
    seen = [{row.tobytes() for row in rows} for rows in (data.train, data.val)]
    assert not seen[0] & seen[1]
    assert data.tokenizer.vocab_size <= data.vocab_size
    for row in [*data.train, *data.val]:
        assert row.ndim == 2 and row.shape[0] == 3 and row.dtype.kind in "iu"
        assert 0 < row.shape[1] <= data.context_length
        ids, targets = row[0], row[1][row[1] != IGNORE_INDEX]
        assert 0 <= ids.min() and ids.max() < data.vocab_size and len(targets) > 0
        assert 0 <= targets.min() and targets.max() < data.vocab_size


def test_every_registered_data_set_has_a_contract() -> None:
    assert sorted([*CASES, *RECORD_ONLY]) == DATASETS.names()


@pytest.mark.parametrize("name", BUILT)
def test_splits_dtypes_and_shapes(name: str, tmp_path: Path) -> None:
    c = case(name)
    data = build(name, tmp_path)
    assert data.task == c.task
    if isinstance(data, TokenData):
        check_token_data(data)
    elif isinstance(data, ExampleData):
        check_example_data(data, c)
    else:
        assert isinstance(data, TensorData)
        check_tensor_data(data, c)


@pytest.mark.parametrize("name", BUILT)
def test_the_same_split_seed_gives_the_same_splits(name: str, tmp_path: Path) -> None:
    # A second cache: language-model data sets tokenize again instead of reading the first.
    first, again = (
        build(name, tmp_path),
        build(name, tmp_path, *cache_dir(name, tmp_path / "again")),
    )
    if isinstance(first, TokenData):
        assert isinstance(again, TokenData)
        assert np.array_equal(first.train, again.train) and np.array_equal(first.val, again.val)
        return
    if isinstance(first, ExampleData):
        assert isinstance(again, ExampleData)
        assert all(map(np.array_equal, [*first.train, *first.val], [*again.train, *again.val]))
        moved = build(name, tmp_path, "data.split_seed=1")
        assert isinstance(moved, ExampleData)
        assert {r.tobytes() for r in moved.val} != {r.tobytes() for r in first.val}
        return
    assert isinstance(first, TensorData) and isinstance(again, TensorData)
    tensors = (*first.train, *first.val, *first.test)
    assert all(map(torch.equal, tensors, (*again.train, *again.val, *again.test)))
    other = build(name, tmp_path, "data.split_seed=1")
    assert isinstance(other, TensorData)
    assert not torch.equal(first.train[0], other.train[0]), "data.split_seed is not used"
