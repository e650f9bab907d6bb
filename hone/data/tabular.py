"""`csv` and `npz`: a table of features and a target read from the file `data.path`.

CSV: a header row, then one sample per row; every feature cell must be a finite number. The
target is the column `data.target_column` (default: the last one); with data.task = auto,
text labels or at most 20 distinct integers make classification, anything else regression.
NPZ: features under the key 'x' (or 'X'), targets under data.target_column (default 'y'),
in any shape: (N, C, H, W) features are images.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hone.config import Config, DataConfig, opt, register_data_config
from hone.data.augment import AugmentConfig
from hone.data.base import DATASETS, TensorData
from hone.data.split import build_tensor_data, encode_targets, task_field
from hone.errors import ConfigError


@register_data_config("csv")
@dataclass
class CsvConfig:
    path: str = opt("", "the CSV file: a header row, then one sample per row")
    target_column: str = opt("", "name of the target column (default: the last column)")
    task: str = task_field()


@register_data_config("npz")
@dataclass
class NpzConfig(AugmentConfig):
    path: str = opt("", "the .npz file: features under 'x' (or 'X')")
    target_column: str = opt("", "key of the targets (default 'y')")
    task: str = task_field()


def _file(cfg: DataConfig, kind: str) -> Path:
    if not cfg.path:
        raise ConfigError(f"data set {cfg.name!r} reads a {kind} file; set --data.path=FILE")
    path = Path(cfg.path)
    if not path.is_file():
        raise ConfigError(
            f"data.path {cfg.path!r} is not a file; set --data.path to the {kind} file"
        )
    return path


def _number(cell: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(
            f"{path}: row {line}, column {column!r} must be a finite number, got {cell!r}; fix or "
            "remove that cell"
        )
    return value


def read_csv(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """(features (N, F) float64, raw targets (N,), feature names, target name) of a CSV file."""
    path = _file(cfg, "CSV")
    with path.open(newline="") as f:
        rows = [(line, row) for line, row in enumerate(csv.reader(f), start=1) if row]
    if len(rows) < 2:
        raise ConfigError(f"{path} needs a header row and at least one data row; check --data.path")
    header = [name.strip() for name in rows[0][1]]
    target = cfg.target_column or header[-1]
    if target not in header:
        raise ConfigError(
            f"data.target_column {target!r} is not a column of {path}; set --data.target_column= to "
            f"one of: {', '.join(header)}"
        )
    if len(header) < 2:
        raise ConfigError(f"{path} needs at least one feature column besides the target {target!r}")
    t = header.index(target)
    features = [i for i in range(len(header)) if i != t]
    x, y = [], []
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise ConfigError(
                f"{path}: row {line} has {len(row)} cells, the header has {len(header)}"
            )
        x.append([_number(row[i], path, line, header[i]) for i in features])
        y.append(row[t].strip())
    try:
        targets = np.array([float(v) for v in y])
    except ValueError:
        targets = np.array(y)  # text labels, read as classes
    if cfg.task == "regression" or targets.dtype.kind == "f":  # numbers: each must be finite
        targets = np.array(
            [_number(v, path, line, target) for (line, _), v in zip(rows[1:], y, strict=True)]
        )
    return np.array(x, dtype=np.float64), targets, [header[i] for i in features], target


@DATASETS.register("csv")
def csv_data(cfg: Config) -> TensorData:
    """Features and a target from the CSV file data.path (see the module docstring)."""
    x, targets, names, target = read_csv(cfg.data)
    y, task, num_outputs, labels = encode_targets(
        targets, cfg.data.task, f"{cfg.data.path} column {target!r}"
    )
    x_t = torch.as_tensor(x, dtype=torch.float32)
    return build_tensor_data(
        x_t, y, task, num_outputs, cfg.data, feature_names=names, class_labels=labels
    )


def arrays_to_data(x: object, y: object, cfg: DataConfig, source: str) -> TensorData:
    """Encode, split and scale features and targets given as numpy arrays or tensors."""
    x_np = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    y_np = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if x_np.ndim < 2 or len(x_np) != len(y_np):
        raise ConfigError(
            f"{source}: features must be (N, ...) with one target per sample, got x {x_np.shape} "
            f"and y {y_np.shape}"
        )
    if x_np.dtype.kind not in "biuf":
        raise ConfigError(f"{source}: features must be numbers, got dtype {x_np.dtype}")
    x_t = torch.as_tensor(x_np.astype(np.float32))
    if not torch.isfinite(x_t).all():
        raise ConfigError(
            f"{source}: the features contain NaN or infinite values; remove or fill them"
        )
    y_t, task, num_outputs, labels = encode_targets(y_np, cfg.task, source)
    return build_tensor_data(x_t, y_t, task, num_outputs, cfg, class_labels=labels)


@DATASETS.register("npz")
def npz_data(cfg: Config) -> TensorData:
    """Arrays 'x' (or 'X') and data.target_column (default 'y') from the .npz file data.path."""
    path = _file(cfg.data, "NPZ")
    with np.load(path, allow_pickle=False) as arrays:
        keys = list(arrays.keys())
        x_key = next((k for k in ("x", "X") if k in arrays), None)
        y_key = cfg.data.target_column or "y"
        if x_key is None or y_key not in arrays:
            raise ConfigError(
                f"{path} must hold features 'x' (or 'X') and targets {y_key!r}, found keys {keys}; "
                "set --data.target_column= to the key of the targets"
            )
        x, y = arrays[x_key], arrays[y_key]
    return arrays_to_data(x, y, cfg.data, f"{path}")
