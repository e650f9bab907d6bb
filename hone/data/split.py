"""From raw arrays to a `TensorData`: targets encoded, a seeded split, scaling fitted on train.

Every in-memory data set ends here, so splitting, the task of the targets and feature scaling
behave the same for digits, CSV files and user data. Scaling is fitted on the training split
only (no information from validation or test leaks into the model) and kept in the
`Preprocessor` so that predict can re-apply it. `kfold` re-splits train+val for cross-validation
and refits the scaling on each fold's training part; the raw features it needs are recovered
by inverting the stored scaling, so no second copy of the data is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hone.config import DataConfig, opt
from hone.data.augment import ShiftAndNoise, build_augment, is_image
from hone.data.base import Preprocessor, TensorData
from hone.errors import ConfigError

Split = tuple[torch.Tensor, torch.Tensor]

# A float target with at most this many distinct integer values is read as class labels.
MAX_AUTO_CLASSES = 20


# ---------------------------------------------------------------- targets


def task_field() -> Any:
    """`data.task`, a key of the data sets whose targets come as they are (csv, npz, custom,
    python): how `encode_targets` reads them."""
    return opt(
        "auto",
        "task of the targets (auto: text labels, booleans and few distinct integers are classes)",
        choices=["auto", "regression", "classification", "binary"],
    )


def _python_label(value: Any) -> Any:
    """A JSON-friendly label: int for integer-valued numbers, else float or str."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def infer_task(y: np.ndarray) -> str:
    """auto: strings, booleans and integers are classes, so are floats with few integer values."""
    if y.ndim == 2 and y.shape[1] > 1:
        return "regression"
    if y.dtype.kind in "USOb" or y.dtype.kind in "iu":
        return "classification"
    values = np.unique(y)
    integral = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
    return "classification" if integral and len(values) <= MAX_AUTO_CLASSES else "regression"


def encode_targets(
    y: np.ndarray, task: str, source: str
) -> tuple[torch.Tensor, str, int, list[Any]]:
    """Targets as the engine wants them: (y, task, num_outputs, class_labels).

    classification: int64 (N,) class indices into the sorted distinct labels; binary: float32
    (N,) of 0/1 (the smaller label is 0); regression: float32 (N, num_outputs).
    """
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if task == "auto":
        task = infer_task(y)
    numeric = y.dtype.kind in "biuf"
    if task == "regression":
        if not numeric:
            raise ConfigError(
                f"{source}: data.task = 'regression' needs numeric targets, got {y.dtype} values; "
                "set --data.task=classification or auto"
            )
        out = torch.as_tensor(np.asarray(y, dtype=np.float32))
        out = out.reshape(len(out), -1)
        if not torch.isfinite(out).all():
            raise ConfigError(
                f"{source}: the targets contain NaN or infinite values; remove or fill them"
            )
        return out, task, out.shape[1], []
    if y.ndim != 1:
        raise ConfigError(
            f"{source}: data.task = {task!r} needs one target per sample, got targets of shape "
            f"{tuple(y.shape)}; set --data.task=regression"
        )
    labels, index = np.unique(y, return_inverse=True)
    class_labels = [_python_label(v) for v in labels]
    if task == "binary":
        if len(labels) != 2:
            raise ConfigError(
                f"{source}: data.task = 'binary' needs exactly 2 distinct targets, got {len(labels)}; "
                "set --data.task=classification or regression"
            )
        return torch.as_tensor(index, dtype=torch.float32), task, 1, class_labels
    assert task == "classification", task
    if len(labels) < 2:
        raise ConfigError(
            f"{source}: classification needs at least 2 distinct targets, got {class_labels}"
        )
    return torch.as_tensor(index, dtype=torch.int64), task, len(labels), class_labels


# ---------------------------------------------------------------- split


def split_indices(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[torch.Tensor, ...]:
    """Seeded (train, val, test) index sets.

    Test takes the head of one permutation and val the next part, so the test set does not
    depend on val_fraction (tuning the validation size never moves test samples). A non-zero
    fraction always gets at least one sample.
    """

    def size(fraction: float) -> int:
        return max(1, round(n * fraction)) if fraction > 0 else 0

    num_test, num_val = size(test_fraction), size(val_fraction)
    if n - num_test - num_val < 1:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction ({val_fraction} + {test_fraction}) leave no training "
            f"samples out of {n}; lower --data.val_fraction or --data.test_fraction"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test, val, train = (
        order[:num_test],
        order[num_test : num_test + num_val],
        order[num_test + num_val :],
    )
    return train, val, test


# ---------------------------------------------------------------- scaling


def fit_preprocessor(x: torch.Tensor, kind: str) -> Preprocessor:
    """Fit `kind` scaling on the training features x (N, *input_shape).

    Flat features get one (shift, scale) each; images one per channel, repeated over its
    pixels, so that a shifted image stays a valid image (the same background everywhere).
    A constant feature gets scale 1, never a division by zero.
    """
    if kind == "none":
        return Preprocessor()
    assert len(x) > 0, "cannot fit scaling on an empty training split"
    x64 = x.double()
    # (N, F) for flat data; (N*H*W, C) for images, so each column is one feature or channel.
    cols = x64.movedim(1, -1).reshape(-1, x.shape[1]) if is_image(x.shape[1:]) else x64.flatten(1)
    low, high = cols.amin(0), cols.amax(0)
    constant = high == low
    if kind == "standard":
        shift, scale = cols.mean(0), cols.std(0, correction=0)
    else:
        assert kind == "minmax", kind
        shift, scale = low, high - low
    shift = torch.where(constant, low, shift)  # constant features become exactly 0
    scale = torch.where(constant, torch.ones_like(scale), scale)
    if is_image(x.shape[1:]):
        pixels = x.shape[2] * x.shape[3]
        shift, scale = shift.repeat_interleave(pixels), scale.repeat_interleave(pixels)
    return Preprocessor(kind=kind, shift=shift.tolist(), scale=scale.tolist())


def transform(pre: Preprocessor, x: torch.Tensor) -> torch.Tensor:
    """Apply `pre`; an empty split (val_fraction = 0) passes through untouched."""
    return pre(x) if len(x) else x


def inverse(pre: Preprocessor, x: torch.Tensor) -> torch.Tensor:
    """Undo `pre`: the raw features back (to float32 rounding)."""
    if pre.kind == "none" or not len(x):
        return x
    shift = torch.tensor(pre.shift, dtype=x.dtype)
    scale = torch.tensor(pre.scale, dtype=x.dtype)
    return (x.flatten(1) * scale + shift).reshape(x.shape)


def linear_truth(w: list[float], b: float, pre: Preprocessor) -> tuple[list[float], float]:
    """Weights of y = w.x + b in the scaled feature space the model sees.

    With x = x' * scale + shift: y = (w * scale).x' + (w.shift + b).
    """
    if pre.kind == "none":
        return list(w), float(b)
    w_model = [wi * si for wi, si in zip(w, pre.scale, strict=True)]
    return w_model, float(b + sum(wi * hi for wi, hi in zip(w, pre.shift, strict=True)))


# ---------------------------------------------------------------- assembly


def _scaled(
    kind: str, train: Split, val: Split, test: Split
) -> tuple[Preprocessor, Split, Split, Split]:
    """Fit `kind` scaling on train and apply it to all three splits."""
    pre = fit_preprocessor(train[0], kind)

    def scaled(split: Split) -> Split:
        return transform(pre, split[0]), split[1]

    return pre, scaled(train), scaled(val), scaled(test)


def build_tensor_data(
    x: torch.Tensor,
    y: torch.Tensor,
    task: str,
    num_outputs: int,
    cfg: DataConfig,
    *,
    test: Split | None = None,
    feature_names: Sequence[str] = (),
    class_labels: Sequence[Any] = (),
    truth: dict[str, Any] | None = None,
) -> TensorData:
    """Split raw x (N, *input_shape) float32 and encoded y by `cfg`, scale, and attach augment.

    With `test` given (a data set's own test files), only val is carved from x by
    data.val_fraction and data.test_fraction is not used.
    """
    assert len(x) == len(y), (x.shape, y.shape)
    if test is None:
        train_idx, val_idx, test_idx = split_indices(
            len(x), cfg.val_fraction, cfg.test_fraction, cfg.split_seed
        )
        test = (x[test_idx], y[test_idx])
    else:
        train_idx, val_idx, _ = split_indices(len(x), cfg.val_fraction, 0.0, cfg.split_seed)
    pre, train, val, test = _scaled(
        cfg.normalize, (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), test
    )
    input_shape = tuple(x.shape[1:])
    return TensorData(
        task=task,
        train=train,
        val=val,
        test=test,
        input_shape=input_shape,
        num_outputs=num_outputs,
        preprocessor=pre,
        feature_names=list(feature_names),
        class_labels=list(class_labels),
        augment=build_augment(cfg, input_shape, pre),
        truth=dict(truth or {}),
    )


def kfold(data: TensorData, k: int, fold: int, seed: int) -> TensorData:
    """Fold `fold` of k-fold cross-validation over train+val: val is that fold, train the rest.

    The folds come from one seeded permutation and differ in size by at most one sample.
    Scaling is refitted on the fold's training part and re-applied to all splits (the test
    samples stay the same); an augmentation built here follows the new scaling.
    """
    pre = data.preprocessor
    x = torch.cat([inverse(pre, data.train[0]), inverse(pre, data.val[0])])
    y = torch.cat([data.train[1], data.val[1]])
    if not 2 <= k <= len(x):
        raise ConfigError(
            f"--cv must be between 2 and the {len(x)} train+val samples, got {k}; "
            f"set --cv={min(5, len(x))}"
        )
    assert 0 <= fold < k, (fold, k)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    parts = torch.tensor_split(order, k)
    val_idx = parts[fold]
    train_idx = torch.cat([p for i, p in enumerate(parts) if i != fold])
    test = (inverse(pre, data.test[0]), data.test[1])
    new_pre, train, val, test = _scaled(
        pre.kind, (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), test
    )
    augment = data.augment
    if isinstance(augment, ShiftAndNoise):
        augment = augment.rescaled(new_pre, data.input_shape)
    truth = dict(data.truth)
    if "w_model" in truth:
        truth["w_model"], truth["b_model"] = linear_truth(truth["w"], truth["b"], new_pre)
    return dataclasses.replace(
        data, train=train, val=val, test=test, preprocessor=new_pre, augment=augment, truth=truth
    )
