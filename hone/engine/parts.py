"""Building a run's parts: from the config, or from parts handed in.

A trainer needs data, a task, a model (possibly converted), a loss and optionally a teacher.
Each may be handed in ready (compression hands a pruned model and a teacher, federated
clients their partition of the data); what is missing is built from the config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hone.config import Config
from hone.data import FullBatcher, TensorBatcher, TensorData, TokenData, WindowBatcher, build_data
from hone.data.base import Data
from hone.distributed.context import DistContext
from hone.engine.tasks import Task, task_of
from hone.losses import build_loss
from hone.models import ModelSpec, build_model
from hone.models.converters import ModelConverter
from hone.optim import OptimizerKind


@dataclass
class Parts:
    data: Data
    task: Task
    spec: ModelSpec
    model: nn.Module
    loss_fn: Callable[..., torch.Tensor]  # what training minimizes
    eval_loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # what val_loss measures
    teacher: nn.Module | None = None
    converters: list[dict[str, Any]] = field(default_factory=list)  # records, in order


def context_length(spec: ModelSpec) -> int:
    """Tokens per window of a language model (0 for other tasks)."""
    return spec.input_shape[0] if spec.task == "lm" else 0


def build_parts(
    cfg: Config,
    device: torch.device,
    data: Data | None = None,
    model: nn.Module | None = None,
    loss: Callable[..., torch.Tensor] | None = None,
    teacher: nn.Module | None = None,
    converters: Iterable[ModelConverter] = (),
) -> Parts:
    """The parts a run trains with; `converters` transform the model after it is built (or
    handed in) and are recorded so that loading the run rebuilds the same architecture."""
    data = data if data is not None else build_data(cfg)
    task = task_of(data)
    spec = task.spec(data, cfg.model.context_length)
    if model is None:
        model = build_model(cfg.model, spec)
    records = []
    for converter in converters:
        model = converter.convert(model)
        records.append(converter.record())
    model = model.to(device)
    if hasattr(model, "activation_checkpointing"):
        setattr(model, "activation_checkpointing", cfg.train.activation_checkpointing)  # noqa: B010
    loss_fn = loss if loss is not None else build_loss(cfg.loss, task.name)
    eval_loss_fn = loss_fn
    if teacher is not None:
        teacher = teacher.to(device).eval().requires_grad_(False)
        # The teacher's term is a training signal; validation measures the config's loss, so
        # that a distilled run's val_loss compares with any other run's.
        eval_loss_fn = build_loss(cfg.loss, task.name)
    return Parts(data, task, spec, model, loss_fn, eval_loss_fn, teacher, records)


def build_batcher(
    cfg: Config, data: Data, spec: ModelSpec, kind: OptimizerKind, dist: DistContext
) -> TensorBatcher | FullBatcher | WindowBatcher:
    """Training batches: token windows, the whole split (full-batch optimizers), or shuffled
    mini-batches; each rank its shard, each step `train.grad_accum` micro-batches."""
    t = cfg.train
    if isinstance(data, TokenData):
        return WindowBatcher(
            data.train,
            context_length(spec),
            t.batch_size,
            t.seed,
            dist.rank,
            dist.world_size,
            t.grad_accum,
        )
    x, y = data.train
    if kind.full_batch:
        return FullBatcher(x, y)
    return TensorBatcher(
        x, y, t.batch_size, t.seed, dist.rank, dist.world_size, t.grad_accum, data.augment
    )


def data_info(data: Data, spec: ModelSpec) -> dict[str, Any]:
    """What eval, predict and sample need to read inputs the way training did (data.json)."""
    if isinstance(data, TokenData):
        return {"task": "lm", "vocab_size": spec.vocab_size, "context_length": context_length(spec)}
    assert isinstance(data, TensorData)
    return {
        "task": data.task,
        "input_shape": list(data.input_shape),
        "num_outputs": data.num_outputs,
        "feature_names": data.feature_names,
        "preprocessor": data.preprocessor.state_dict(),
        "class_labels": list(data.class_labels or []),
    }
