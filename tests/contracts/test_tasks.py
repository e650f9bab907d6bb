"""Every task in `TASKS`, and a task a user registers: a spec from tiny data, evaluation batches
that cover a split exactly once, a finite metric on an untrained model's outputs, predictions
of one row per sample, an evaluation batch size from the config, run files (data.json, the
tokenizer) that rebuild the same spec, and data drawn by a loader. Unknown names are refused
with a one-line `ConfigError` listing the known ones."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hone.config import Config, LossConfig, ModelConfig, TrainConfig
from hone.data import TensorData, TokenData
from hone.data.base import Data
from hone.data.text.tokenizers import CharTokenizer
from hone.engine.inference import spec_from_info
from hone.engine.tasks import (
    TASKS,
    Batch,
    Classification,
    Task,
    evaluate,
    register_task,
    resolve_task,
    task_of,
)
from hone.errors import ConfigError
from hone.models import ModelSpec, build_model
from hone.run_files import RunFiles

NUM_SAMPLES, NUM_FEATURES, NUM_CLASSES, TARGET_WIDTH = 10, 3, 4, 2
BLOCK_SIZE, CHARS = 4, "abcdefg"  # the vocabulary: 7 characters and the unknown id
BATCH_SIZE, EVAL_BATCH_SIZE = 3, 4


def table(task: str, targets: Callable[[torch.Generator, int], torch.Tensor], outputs: int) -> Data:
    """Train, val and test splits of 10, 7 and 5 random rows (val is not a multiple of the
    evaluation batch: the last batch is short)."""
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(n, NUM_FEATURES, generator=g), targets(g, n)

    features = [f"f{i}" for i in range(NUM_FEATURES)]
    return TensorData(
        task, split(NUM_SAMPLES), split(7), split(5), (NUM_FEATURES,), outputs,
        feature_names=features,
    )  # fmt: skip


def classes(g: torch.Generator, n: int) -> torch.Tensor:
    return torch.randint(0, NUM_CLASSES, (n,), generator=g)


def tokens() -> Data:
    """Two short texts: 27 training and 11 validation tokens (no whole number of windows)."""
    tokenizer = CharTokenizer(CHARS)
    encode = lambda text: np.array(tokenizer.encode(text), dtype=np.uint16)  # noqa: E731
    train, val = encode("abcdefgabcdefgabcdefgabcdef"), encode("gfedcbagfed")
    return TokenData(train, val, tokenizer, tokenizer.vocab_size)


@dataclass(frozen=True)
class Contract:
    """A task's tiny data, the config its loss and model come from, and its batch rule."""

    data: Callable[[], Data]
    loss: str  # loss.name
    model: dict[str, Any]  # ModelConfig fields: a small model that takes the task's inputs
    evaluates_with_training_batches: bool = False  # eval batch size = train.batch_size
    context_length: int = 0  # model.context_length


def labels(g: torch.Generator, n: int) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=g).float()


def values(g: torch.Generator, n: int) -> torch.Tensor:
    return torch.randn(n, TARGET_WIDTH, generator=g)


LINEAR = {"name": "linear"}
GPT = {"name": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8, "block_size": BLOCK_SIZE}
CONTRACTS: dict[str, Contract] = {
    "classification": Contract(
        lambda: table("classification", classes, NUM_CLASSES), "cross_entropy", LINEAR
    ),
    "binary": Contract(lambda: table("binary", labels, 1), "bce", LINEAR),
    "regression": Contract(lambda: table("regression", values, TARGET_WIDTH), "mse", LINEAR),
    "lm": Contract(tokens, "cross_entropy", GPT, True, BLOCK_SIZE),
}


class TopTwo(Task):
    """A user's task: a classifier judged right when the label is among its two best guesses."""

    name, metric = "top_two", "accuracy"

    def loss(self, cfg: LossConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return F.cross_entropy  # no built-in loss lists this task

    def update(self, state: Any, out: torch.Tensor, y: torch.Tensor) -> Any:
        return state + (out.topk(2, -1).indices == y[:, None]).any(-1).sum()

    def finish(self, state: Any, count: int, loss: float) -> float:
        return (state / count).item()

    def postprocess(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        return Classification().postprocess(out)


USER = Contract(lambda: table("classification", classes, NUM_CLASSES), "cross_entropy", LINEAR)


@pytest.fixture
def user_task(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """TopTwo registered for one test: the registry is restored afterwards."""
    monkeypatch.setattr(TASKS, "_entries", dict(TASKS._entries))
    register_task(TopTwo)  # as a class decorator would
    yield TopTwo.name


ALL = [*TASKS.names(), "user"]


@pytest.fixture(params=ALL)
def case(request: pytest.FixtureRequest) -> tuple[Task, Contract, Data]:
    """(task, contract, tiny data) for a registered task, or for the user's task by name."""
    if request.param == "user":
        request.getfixturevalue("user_task")
        data = USER.data()
        return resolve_task(TopTwo.name, data), USER, data
    contract = CONTRACTS[request.param]
    data = contract.data()
    task = task_of(data)
    assert task is TASKS.get(request.param)
    return task, contract, data


def spec_of(task: Task, contract: Contract, data: Data) -> ModelSpec:
    return task.spec(data, contract.context_length)


def test_every_registered_task_has_a_contract() -> None:
    assert sorted(CONTRACTS) == TASKS.names()


def test_spec_from_tiny_data(case: tuple[Task, Contract, Data]) -> None:
    task, contract, data = case
    spec = spec_of(task, contract, data)
    assert spec.task == task.name and spec.num_outputs >= 1 and spec.input_shape
    assert task.context_length(spec) == contract.context_length
    assert task.tokens_per_sample(spec) in (0, task.context_length(spec))


def split_targets(data: Data, split: str) -> torch.Tensor:
    """Every target of `split` once: the rows' targets, or the tokens after the first."""
    if isinstance(data, TokenData):
        return torch.from_numpy(getattr(data, split)[1:].astype(np.int64))
    return getattr(data, split)[1]


def test_eval_batches_cover_each_split_once(case: tuple[Task, Contract, Data]) -> None:
    task, contract, data = case
    spec = spec_of(task, contract, data)
    for split in task.splits:
        assert task.has_split(data, split), split
        batches = list(task.eval_batches(data, split, EVAL_BATCH_SIZE, task.context_length(spec)))
        assert batches, split
        assert all(len(x) == len(y) for x, y in batches)
        # Windows of tokens end to end; rows of targets one after the other.
        flat = isinstance(data, TokenData)
        targets = torch.cat([y.flatten() if flat else y for _, y in batches])
        assert torch.equal(targets, split_targets(data, split)), split


def untrained(task: Task, contract: Contract, spec: ModelSpec) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(**contract.model), spec)


def test_metric_is_finite_on_an_untrained_model(case: tuple[Task, Contract, Data]) -> None:
    task, contract, data = case
    spec = spec_of(task, contract, data)
    model = untrained(task, contract, spec)
    batches = task.eval_batches(data, "val", EVAL_BATCH_SIZE, task.context_length(spec))
    loss_fn = task.loss(LossConfig(name=contract.loss))
    result = evaluate(model, batches, loss_fn, task, torch.device("cpu"), contextlib.nullcontext)
    assert set(result) == {"loss", task.metric}
    assert all(math.isfinite(v) for v in result.values()), result


def test_postprocess_gives_one_prediction_per_sample(case: tuple[Task, Contract, Data]) -> None:
    task, contract, data = case
    spec = spec_of(task, contract, data)
    x, _ = next(iter(task.eval_batches(data, "val", EVAL_BATCH_SIZE, task.context_length(spec))))
    with torch.no_grad():
        out = untrained(task, contract, spec)(x)
    result = task.postprocess(out)
    assert len(result["predictions"]) == len(x)
    if "probabilities" in result:
        p = result["probabilities"]
        assert len(p) == len(x) and bool(((p >= 0) & (p <= 1)).all())
    if task.generates_text:
        return
    columns, rows = task.prediction_columns(
        {k: v.tolist() for k, v in result.items()}, spec.num_outputs, []
    )
    assert columns and len(rows) == len(x) and all(len(row) == len(columns) for row in rows)


def test_eval_batch_size_comes_from_the_config(case: tuple[Task, Contract, Data]) -> None:
    task, contract, _ = case
    train = TrainConfig(batch_size=BATCH_SIZE, eval_batch_size=EVAL_BATCH_SIZE)
    expected = BATCH_SIZE if contract.evaluates_with_training_batches else EVAL_BATCH_SIZE
    assert task.eval_batch_size(train) == expected


def test_run_files_rebuild_the_spec(case: tuple[Task, Contract, Data], tmp_path: Path) -> None:
    task, contract, data = case
    spec = spec_of(task, contract, data)
    info = json.loads(json.dumps(task.info(data, spec)))  # as data.json holds it
    assert info["task"] == task.name
    assert spec_from_info(info, Config()) == spec
    files = RunFiles(tmp_path)
    task.save_input_files(data, files)
    tokenizer, preprocessor = task.input_readers(files, info)
    if isinstance(data, TokenData):
        assert tokenizer is not None and tokenizer.encode("gab") == data.tokenizer.encode("gab")
    else:
        assert preprocessor is not None
        assert preprocessor.state_dict() == data.preprocessor.state_dict()


class Loaders:
    """Data drawn by loaders, as hone.data.loaders.LoaderData hands it: `(x, y)` batches, the
    shapes read off the first one, no tokenizer and no preprocessing of hone's."""

    tokenizer = None

    def __init__(self, batches: dict[str, list[Batch]], spec: ModelSpec) -> None:
        self.splits = batches
        self.input_shape, self.num_outputs = spec.input_shape, spec.num_outputs
        self.vocab_size = spec.vocab_size

    def batches(self, split: str) -> Iterator[Batch]:
        return iter(self.splits[split])

    def has(self, split: str) -> bool:
        return split in self.splits


def test_a_loaders_batches_are_evaluated_as_drawn(case: tuple[Task, Contract, Data]) -> None:
    task, contract, data = case
    spec = spec_of(task, contract, data)
    drawn = list(task.eval_batches(data, "val", EVAL_BATCH_SIZE, task.context_length(spec)))
    loaders: Any = Loaders({"val": drawn}, spec)
    assert task.has_split(loaders, "val") and not task.has_split(loaders, "test")
    again = list(task.eval_batches(loaders, "val", 1, task.context_length(spec)))
    assert len(again) == len(drawn)
    assert all(x is x2 and y is y2 for (x, y), (x2, y2) in zip(drawn, again, strict=True))
    # The same spec from the loaders' own shapes (a language model's windows give the
    # context length), and a data.json that rebuilds it.
    assert task.spec(loaders, 0) == spec
    assert spec_from_info(json.loads(json.dumps(task.info(loaders, spec))), Config()) == spec


def test_loader_data_draws_its_own_batches() -> None:
    from hone.data.loaders import LoaderData

    # The methods the tasks call on a loader's data (they check for them, not for the class).
    assert all(callable(getattr(LoaderData, name, None)) for name in ("batches", "has"))


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as refused:
        TASKS.get("clasification")
    message = str(refused.value)
    assert "\n" not in message and "'classification'" in message
    assert all(name in message for name in TASKS.names())


def test_a_registered_name_cannot_be_taken_twice(user_task: str) -> None:
    with pytest.raises(ConfigError, match="registered already"):
        register_task(TopTwo())
    with pytest.raises(ConfigError, match="registered already"):
        register_task(Classification())

    class Nameless(TopTwo):
        name = ""

    with pytest.raises(ConfigError, match="has no name"):
        register_task(Nameless())


def test_the_user_task_leaves_the_registry_as_it_was() -> None:
    assert TopTwo.name not in TASKS
