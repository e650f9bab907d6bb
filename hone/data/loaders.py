"""Data as Python users hold it: a DataLoader, a Dataset, a `datasets.Dataset`, (x, y) arrays.

`user_data` turns what `hone.Trainer(model, train_data, val_data, test_data)` is handed into
one of the engine's `Data` kinds:

- `(x, y)` tensors or numpy arrays become a `TensorData`, used as given (no split, no
  scaling): the in-memory batcher, exact resume and several processes work as for the
  built-in data sets.
- Everything else becomes a `LoaderData` whose splits are loaders. What hone builds (from a
  map-style or iterable `Dataset`, or a `datasets.Dataset`) and what it wraps (a user's
  `DataLoader`: same dataset, batch size, sampler, collate function and workers) is a torchdata
  `StatefulDataLoader`, the library made for loaders that checkpoint their position, so that
  a resumed run sees exactly the batches an uninterrupted one would. A user's own iterable of
  batches is used as it is; on resume it is fast-forwarded past the batches already consumed
  (`hone.data.loader_batcher`), which is exact only when it yields the same batches in
  the same order each time: hone says so once.

Batches may be `(x, y)` tuples or lists, dicts (the keys `data.input_column` and
`data.target_column` pick input and target, with common names as defaults), or a single
tensor of token windows for a language model (inputs and targets are the window shifted by
one). `batch_splitter` normalizes each to `(x, y)`; hone.data.loader_batcher draws them for
training.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hone.config import Config
from hone.data.base import Preprocessor, TensorData
from hone.data.split import infer_task
from hone.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]

INPUT_KEYS = ("x", "input", "inputs", "features", "image", "pixel_values", "input_ids")
TARGET_KEYS = ("y", "label", "labels", "target", "targets")
TASKS = ("classification", "binary", "regression", "lm")


@dataclass
class LoaderData:
    """Splits held as loaders (iterables of batches) rather than tensors in memory."""

    task: str
    train: Iterable[Any]
    val: Iterable[Any] | None
    test: Iterable[Any] | None
    input_shape: tuple[int, ...]
    num_outputs: int  # classes, 1 for binary, target width for regression, vocabulary for lm
    split_batch: Callable[[Any], Batch]
    preprocessor: Preprocessor = field(default_factory=Preprocessor)  # none: used as given
    feature_names: list[str] = field(default_factory=list)
    class_labels: list[Any] = field(default_factory=list)
    augment: None = None
    tokenizer: None = None  # a language model trained on loaders has no tokenizer to sample with

    @property
    def vocab_size(self) -> int:
        return self.num_outputs

    def has(self, split: str) -> bool:
        return getattr(self, split, None) is not None

    def sample(self, rows: int = 4096) -> Batch | None:
        """Up to `rows` training samples as `(x, y)`, for the baselines a run is measured
        against, read without moving the training loader: the dataset's first items, or the
        first batches of a plain iterable; None when neither can be read that way."""
        dataset = getattr(self.train, "dataset", None)
        collate = getattr(self.train, "collate_fn", None)
        if dataset is not None and collate is not None and hasattr(dataset, "__len__"):
            try:
                return self.split_batch(
                    collate([dataset[i] for i in range(min(rows, len(dataset)))])
                )
            except (TypeError, NotImplementedError, IndexError, KeyError):
                return None
        if hasattr(self.train, "state_dict"):
            return None
        xs, ys, count = [], [], 0
        for batch in self.train:
            x, y = self.split_batch(batch)
            xs.append(x)
            ys.append(y)
            count += len(x)
            if count >= rows:
                break
        return (torch.cat(xs), torch.cat(ys)) if xs else None

    def batches(self, split: str) -> Iterator[Batch]:
        """The `(x, y)` pairs of one pass over `split`, in the loader's order."""
        loader = getattr(self, split)
        assert loader is not None, split
        return (self.split_batch(batch) for batch in loader)


def batch_splitter(task: str, input_key: str = "", target_key: str = "") -> Callable[[Any], Batch]:
    """How a batch of the user's becomes `(inputs, targets)`."""

    def split(batch: Any) -> Batch:
        if isinstance(batch, tuple | list):
            if len(batch) != 2:
                raise ConfigError(
                    f"a batch must be (inputs, targets), a dict or a tensor; got a "
                    f"{type(batch).__name__} of {len(batch)} items"
                )
            return _tensor(batch[0]), _tensor(batch[1])
        if isinstance(batch, Mapping):
            x_key = input_key or _first_key(batch, INPUT_KEYS, "data.input_column")
            y_key = target_key or _first_key(batch, TARGET_KEYS, "data.target_column")
            for key, flag in ((x_key, "input_column"), (y_key, "target_column")):
                if key not in batch:
                    raise ConfigError(
                        f"a batch has no key {key!r} (it has {', '.join(map(str, batch))}); "
                        f"set data.{flag} to one of them"
                    )
            return _tensor(batch[x_key]), _tensor(batch[y_key])
        if isinstance(batch, torch.Tensor) and task == "lm":
            return batch[:, :-1], batch[:, 1:]  # windows of T + 1 tokens: predict the next one
        raise ConfigError(
            f"a batch must be (inputs, targets), a dict or (for task 'lm') a tensor of token "
            f"windows; got {type(batch).__name__}"
        )

    return split


def _first_key(batch: Mapping[str, Any], names: tuple[str, ...], flag: str) -> str:
    for name in names:
        if name in batch:
            return name
    raise ConfigError(
        f"a dict batch has keys {', '.join(map(str, batch))} and none of {', '.join(names)}; "
        f"set {flag} (overrides=['{flag}=KEY'])"
    )


def _tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(np.asarray(value))


# ----------------------------------------------------------------- what users hand in
def is_arrays(value: Any) -> bool:
    return (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, torch.Tensor | np.ndarray) for v in value)
    )


def _is_hf_dataset(value: Any) -> bool:
    return type(value).__module__.startswith("datasets.") and hasattr(value, "with_format")


def user_data(
    cfg: Config,
    train: Any,
    val: Any = None,
    test: Any = None,
    task: str | None = None,
    model: torch.nn.Module | None = None,
) -> TensorData | LoaderData:
    """The engine's data for what `hone.Trainer` was handed (`train` not None)."""
    if is_arrays(train):
        for name, split in (("val_data", val), ("test_data", test)):
            if split is not None and not is_arrays(split):
                raise ConfigError(
                    f"train_data is (x, y) arrays, so {name} must be (x, y) arrays too, got "
                    f"{type(split).__name__}"
                )
        return arrays_data(train, val, test, task or _task_setting(cfg))
    return loader_data(cfg, train, val, test, task, model)


def _task_setting(cfg: Config) -> str | None:
    return None if cfg.data.task == "auto" else cfg.data.task


def arrays_data(train: tuple[Any, Any], val: Any, test: Any, task: str | None) -> TensorData:
    """(x, y) arrays as a `TensorData`: float32 inputs, targets typed by the task."""
    x, y = (_tensor(v) for v in train)
    if len(x) != len(y):
        raise ConfigError(f"train_data has {len(x)} inputs but {len(y)} targets")
    task = task or infer_task(y.numpy())
    if task == "lm":
        raise ConfigError(
            "a language model takes token windows, not (x, y) arrays; pass a DataLoader of "
            "windows or config data (data.name = 'text')"
        )
    _check_task(task)
    splits = [(x, y)] + [
        tuple(_tensor(v) for v in s) if s is not None else (x[:0], y[:0]) for s in (val, test)
    ]
    typed = [(sx.float(), _targets(sy, task)) for sx, sy in splits]
    num_outputs = _num_outputs(task, [sy for _, sy in typed])
    return TensorData(
        task, typed[0], typed[1], typed[2], tuple(x.shape[1:]), num_outputs,  # type: ignore[arg-type]
        class_labels=list(range(num_outputs)) if task == "classification" else [],
    )  # fmt: skip


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


def _targets(y: torch.Tensor, task: str) -> torch.Tensor:
    if task == "classification":
        if y.is_floating_point() and not torch.equal(y, y.round()):
            raise ConfigError("classification targets must be class indices 0..C-1")
        return y.long().reshape(len(y))
    if task == "binary":
        return y.float().reshape(len(y))
    return y.float().reshape(len(y), -1)


def _num_outputs(task: str, ys: list[torch.Tensor]) -> int:
    if task == "classification":
        return int(max(int(y.max()) for y in ys if len(y)) + 1)
    if task == "binary":
        return 1
    return int(ys[0].shape[1])


def loader_data(
    cfg: Config,
    train: Any,
    val: Any,
    test: Any,
    task: str | None,
    model: torch.nn.Module | None,
) -> LoaderData:
    """Loaders for the splits; the task and shapes from the first training sample."""
    d, t = cfg.data, cfg.train
    training = as_loader(train, t.batch_size, training=True, seed=t.seed)
    val_loader, test_loader = (
        None if s is None else as_loader(s, t.eval_batch_size, training=False, seed=t.seed)
        for s in (val, test)
    )
    first = _first_batch(training)
    task = task or _task_setting(cfg)
    split = batch_splitter(task or "", d.input_column, d.target_column)
    if isinstance(first, torch.Tensor) and task is None:
        task = "lm"  # a batch that is one integer tensor: token windows
        split = batch_splitter(task, d.input_column, d.target_column)
    x, y = split(first)
    task = task or infer_task(y.numpy())
    _check_task(task)
    num_outputs = _loader_outputs(task, x, y, model, training, split)
    shape = tuple(x.shape[1:])
    return LoaderData(task, training, val_loader, test_loader, shape, num_outputs, split)


def _loader_outputs(
    task: str,
    x: torch.Tensor,
    y: torch.Tensor,
    model: torch.nn.Module | None,
    train: Iterable[Any],
    split: Callable[[Any], Batch],
) -> int:
    """The width of the model's output: asked of the model when there is one (one forward
    pass on a sample, in eval mode), else read from the targets."""
    if model is not None:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            out = model(x[:2])
        model.train(was_training)
        return int(out.shape[-1]) if out.ndim > 1 else 1
    if task == "lm":
        raise ConfigError(
            "a language model trained on loaders needs its model handed in: "
            "hone.Trainer(model=..., train_data=...)"
        )
    if task == "classification":  # one pass over the targets only
        return int(max(int(split(batch)[1].max()) for batch in train)) + 1
    return 1 if task == "binary" or y.ndim == 1 else int(y.shape[-1])


def _first_batch(loader: Iterable[Any]) -> Any:
    """One batch of the training loader, without moving a stateful loader's position: a
    map-style dataset's first item, collated; otherwise one batch of a fresh iteration."""
    dataset = getattr(loader, "dataset", None)
    collate = getattr(loader, "collate_fn", None)
    if dataset is not None and collate is not None and hasattr(dataset, "__getitem__"):
        try:
            return collate([dataset[0], dataset[min(1, len(dataset) - 1)]])
        except (TypeError, NotImplementedError, IndexError):
            pass  # an iterable dataset
    iterator = iter(loader)
    if iterator is loader:
        raise ConfigError(
            "train_data is a one-shot iterator (a generator); pass something that can be "
            "iterated once per epoch: a list of batches, a DataLoader or an IterableDataset"
        )
    try:
        return next(iterator)
    except StopIteration:
        raise ConfigError("train_data yields no batches") from None


def as_loader(data: Any, batch_size: int, training: bool, seed: int) -> Iterable[Any]:
    """A `StatefulDataLoader` over a dataset or around a user's DataLoader (a torchdata one
    included); an iterable of batches otherwise, as it is."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    if isinstance(data, DataLoader):
        return _rewrap(data, seed)
    if _is_hf_dataset(data):
        data = data.with_format("torch")
    if isinstance(data, IterableDataset):
        return stateful(data, batch_size=batch_size)
    if isinstance(data, Dataset) or _is_hf_dataset(data):
        size = len(data)  # type: ignore[arg-type]
        if training and size < batch_size:
            raise ConfigError(
                f"train.batch_size ({batch_size}) is larger than train_data ({size} samples); "
                f"set overrides=['train.batch_size={size}'] or less"
            )
        if not training:
            return stateful(data, batch_size=batch_size)
        return _shuffled(data, batch_size, True, _generator(seed), seed)
    if isinstance(data, Iterable) and not isinstance(data, str | bytes | Mapping):
        return data
    raise ConfigError(
        f"cannot train on a {type(data).__name__}: pass (x, y) arrays, a DataLoader, a "
        "Dataset, a datasets.Dataset or an iterable of batches"
    )


def _shuffled(
    dataset: Any, batch_size: int, drop_last: bool, order: torch.Generator, seed: int, **common: Any
) -> Any:
    """A shuffling StatefulDataLoader whose sampler owns the generator of the order.

    Not `shuffle=True, generator=g`: then the loader also draws each iterator's base seed
    from g, and a loader restored mid-epoch drew the next epoch's order from a different
    generator state than an uninterrupted one (torchdata 0.11; seen in
    tests/python/test_trainer_api.py). With the sampler's own generator both agree."""
    from torchdata.stateful_dataloader.sampler import RandomSampler  # type: ignore[import-untyped]

    return stateful(
        dataset,
        batch_size=batch_size,
        sampler=RandomSampler(dataset, generator=order),
        drop_last=drop_last,
        generator=_generator(seed + 1),  # the workers' base seeds
        **common,
    )


def stateful(*args: Any, **kwargs: Any) -> Any:
    """A torchdata StatefulDataLoader; its constructor calls a torch function that torch
    2.13 deprecated, which warned on every loader hone built."""
    from torchdata.stateful_dataloader import StatefulDataLoader  # type: ignore[import-untyped]

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*set_vital.*")
        return StatefulDataLoader(*args, **kwargs)


def common_arguments(loader: Any) -> dict[str, Any]:
    """What a DataLoader made again from `loader` keeps of it besides its data and order:
    its collate function and workers."""
    common: dict[str, Any] = dict(
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers,
    )
    if loader.num_workers:
        common["prefetch_factor"] = loader.prefetch_factor
    return common


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _rewrap(loader: Any, seed: int) -> Any:
    """The same loader as a StatefulDataLoader that restores exactly: same dataset, batches,
    sampler, collate and workers. A shuffling loader's order is drawn from a copy of its own
    generator, or, when it has none (each epoch's order would come from torch's global RNG),
    from one seeded with train.seed, so that runs repeat and resume."""
    from torch.utils.data import RandomSampler

    common = common_arguments(loader)
    if loader.batch_size is None:  # a batch_sampler of the user's, or no batching at all
        return stateful(
            loader.dataset, batch_sampler=loader.batch_sampler, batch_size=None, **common
        ) if loader.batch_sampler is not None else loader  # fmt: skip
    sampler = loader.sampler
    if isinstance(sampler, RandomSampler) and not sampler.replacement:  # shuffle=True
        source = getattr(sampler, "generator", None) or loader.generator
        order = _generator(seed)
        if source is not None:
            order.set_state(source.get_state())
        return _shuffled(loader.dataset, loader.batch_size, loader.drop_last, order, seed, **common)
    kind = type(sampler).__name__
    if kind in ("SequentialSampler", "_InfiniteConstantSampler"):
        sampler = None  # shuffle=False, or an IterableDataset
    return stateful(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        drop_last=loader.drop_last,
        **common,
    )
