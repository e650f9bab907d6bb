"""What `hone.Trainer` is handed, checked and turned into the engine's terms before anything
is built or written: the config (from a recipe, a file, a `Config` or a dict, plus
overrides), the data (hone.data.loaders), a loss named or given, a task, the user's metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hone.config import Config, validate
from hone.config.loader import config_from
from hone.data.base import Data
from hone.data.loaders import LoaderData, user_data
from hone.engine.tasks import TASKS, Task, register_task
from hone.errors import ConfigError
from hone.metrics import Metric, configured_metrics, user_metrics

ConfigSource = str | Path | Config | Mapping[str, Any] | None


@dataclass
class Inputs:
    cfg: Config
    data: Data | LoaderData | None  # None: the config's data set
    loss: Callable[..., torch.Tensor] | None  # None: the config's loss
    metrics: dict[str, Metric]  # the user's own, by name
    task: Task | None  # a Task handed in (it decides over a registered one of its name)


def resolve_inputs(
    config: ConfigSource,
    overrides: Sequence[str],
    model: nn.Module | None,
    splits: tuple[Any, Any, Any],
    loss: Callable[..., torch.Tensor] | str | None,
    task: str | Task | None,
    metrics: Mapping[str, Any] | None,
    data: Data | LoaderData | None,
) -> Inputs:
    """The checked config and parts; a ConfigError for the first thing that is wrong."""
    train, val, test = splits
    # Data handed in is the `python` data set, whose keys (data.input_column, ...) read it.
    python_data = ["data.name=python"] if train is not None else []
    cfg = config_from(config, [*python_data, *overrides], check=False)
    if isinstance(loss, str):
        cfg.loss.name, loss = loss, None
    if model is not None and not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if train is None and (val is not None or test is not None):
        raise ConfigError("val_data and test_data go with train_data; pass train_data too")
    task_name = task.name if isinstance(task, Task) else task
    if isinstance(task, Task) and task.name not in TASKS:
        register_task(task)
    if train is not None:
        data = user_data(cfg, train, val, test, task_name, model)
        # Recorded for the commands: they cannot rebuild these data, and hone did not scale them.
        cfg.data.name, cfg.data.normalize = "python", "none"
        size = getattr(getattr(data, "train", None), "batch_size", None)
        if isinstance(data, LoaderData) and isinstance(size, int):
            cfg.train.batch_size = size  # the loader's batches, as the run's record says
    elif task_name is not None and data is None and hasattr(cfg.data, "task"):
        cfg.data.task = task_name  # a data set that reads its targets by data.task (csv, npz)
    handed = user_metrics(metrics)
    cfg.train.metrics = [*cfg.train.metrics, *(n for n in handed if n not in cfg.train.metrics)]
    validate(cfg)
    # A model family that decides part of the rest (a pretrained checkpoint: its tokenizer
    # and context length, hone.pretrained.model) fills it in before the data is read.
    complete = getattr(cfg.model.arch, "complete", None)
    if model is None and complete is not None:
        complete(cfg)
    handed_task = task if isinstance(task, Task) else None
    return Inputs(cfg, data, loss, configured_metrics(cfg.train.metrics), handed_task)
