"""Building a run's parts: from the config, or from parts handed in.

A trainer needs data, a task, a model (possibly converted), a loss and optionally a teacher.
Each may be handed in ready (compression hands a pruned model and a teacher, federated
clients their partition of the data); what is missing is built from the config.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hone.config import Config, ModelConfig
from hone.data import FullBatcher, TensorBatcher, TokenData, WindowBatcher, build_data
from hone.data.base import Data, ExampleData
from hone.data.batching import ExampleBatcher
from hone.data.loader_batcher import LoaderBatcher
from hone.data.loader_shards import rank_shard
from hone.data.loaders import LoaderData
from hone.distributed.context import DistContext
from hone.engine.precision import resolve_precision
from hone.engine.task_base import ModelLoss
from hone.engine.tasks import Task, resolve_task, task_of
from hone.errors import ConfigError
from hone.finetune.lora import with_config_adapters
from hone.models import ModelSpec, build_model
from hone.models.converters import ModelConverter, convert_model, post_optimizer_steps
from hone.optim import OptimizerKind, build_optimizer, optimizer_kind


@dataclass
class Parts:
    data: Data | LoaderData
    task: Task
    spec: ModelSpec
    model: nn.Module
    loss_fn: Callable[..., torch.Tensor]  # what training minimizes
    eval_loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # what val_loss measures
    teacher: nn.Module | None = None
    converters: list[dict[str, Any]] = field(default_factory=list)  # records, in order
    # The converters' post_optimizer_step hooks, for the Stepper: usually none.
    post_step: list[Callable[[nn.Module], None]] = field(default_factory=list)
    # The loss the model computes itself (Task.model_loss), used by training steps: None
    # when a loss or a teacher is handed in, or the task and model offer none.
    model_loss: ModelLoss | None = None


def build_parts(
    cfg: Config,
    device: torch.device,
    data: Data | LoaderData | None = None,
    model: nn.Module | None = None,
    loss: Callable[..., torch.Tensor] | None = None,
    teacher: nn.Module | None = None,
    converters: Iterable[ModelConverter] = (),
    task: Task | None = None,
) -> Parts:
    """The parts a run trains with; `converters` transform the model after it is built (or
    handed in; one in record-only mode has already) and are recorded so that loading the
    run rebuilds the same architecture."""
    data = data if data is not None else build_data(cfg)
    task = resolve_task(task, data)
    spec = task.spec(data, cfg.model.context_length)
    if model is None:
        model = build_model(cfg.model, spec)
    # [lora] enabled: adapters on the frozen model, after the converters handed in
    precision, _ = resolve_precision(cfg.train.precision, device)
    converters = with_config_adapters(cfg, converters, precision)
    model, records = convert_model(model, converters)
    model = model.to(device)
    if hasattr(model, "activation_checkpointing"):
        setattr(model, "activation_checkpointing", cfg.train.activation_checkpointing)  # noqa: B010
    loss_fn = loss if loss is not None else task.loss(cfg.loss)
    eval_loss_fn = loss_fn
    if teacher is not None:
        teacher = teacher.to(device).eval().requires_grad_(False)
        # The teacher's term is a training signal; validation measures the config's loss, so
        # that a distilled run's val_loss compares with any other run's.
        eval_loss_fn = task.loss(cfg.loss)
    post_step = post_optimizer_steps(converters)
    model_loss = task.model_loss(model, cfg.loss) if loss is None and teacher is None else None
    if isinstance(data, ExampleData) and data.packed_train and model_loss is None:
        raise ConfigError(
            "packed examples need a model that takes their positions (gpt, llama, pretrained) "
            "and its own cross_entropy loss, no loss or teacher handed in; set --data.pack=false"
        )
    return Parts(
        data, task, spec, model, loss_fn, eval_loss_fn, teacher, records, post_step, model_loss
    )


def build_batcher(
    cfg: Config,
    data: Data | LoaderData,
    spec: ModelSpec,
    kind: OptimizerKind,
    dist: DistContext,
    device: torch.device | None = None,
) -> TensorBatcher | FullBatcher | WindowBatcher | LoaderBatcher | ExampleBatcher:
    """Training batches: token windows, the whole split (full-batch optimizers), shuffled
    mini-batches or a loader's batches; each rank its shard, each step `train.grad_accum`
    micro-batches."""
    t = cfg.train
    if isinstance(data, LoaderData):
        loader = data.train
        if dist.world_size > 1:  # this rank's part of each global batch
            loader = rank_shard(loader, dist.rank, dist.world_size, t.seed)
        if kind.full_batch:
            raise ConfigError(
                f"optim.name = {cfg.optim.name!r} steps on the whole training split at once; "
                "hand in train_data as (x, y) arrays, or choose a mini-batch optimizer "
                "(--optim.name=adamw)"
            )
        device = device or torch.device("cpu")
        return LoaderBatcher(loader, data.split_batch, t.grad_accum, device, dist.world_size)
    if isinstance(data, TokenData):
        return WindowBatcher(
            data.train,
            task_of(data).context_length(spec),
            t.batch_size,
            t.seed,
            dist.rank,
            dist.world_size,
            t.grad_accum,
        )
    if isinstance(data, ExampleData):  # packed rows when there are
        rows = data.packed_train or data.train
        return ExampleBatcher(
            rows, t.batch_size, t.seed, data.pad_id, bool(data.packed_train),
            dist.rank, dist.world_size, t.grad_accum,
        )  # fmt: skip
    x, y = data.train
    if kind.full_batch:
        return FullBatcher(x, y)
    return TensorBatcher(
        x, y, t.batch_size, t.seed, dist.rank, dist.world_size, t.grad_accum, data.augment
    )


def build_user_optimizer(
    optimizer: torch.optim.Optimizer | Callable[..., torch.optim.Optimizer] | None,
    cfg: Config,
    model: nn.Module,
    device: torch.device,
) -> tuple[torch.optim.Optimizer, OptimizerKind]:
    """The optimizer handed in (an instance over the model's parameters, or a factory called
    with them), or the config's; and how the engine drives it."""
    if optimizer is None:
        return build_optimizer(cfg.optim, model, device), optimizer_kind(cfg.optim.name)
    if not isinstance(optimizer, torch.optim.Optimizer):
        if not callable(optimizer):
            raise ConfigError(
                "optimizer must be a torch.optim.Optimizer or a function params -> Optimizer, "
                f"got {type(optimizer).__name__}"
            )
        optimizer = optimizer(model.parameters())
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigError(
                f"the optimizer factory returned a {type(optimizer).__name__}, not a "
                "torch.optim.Optimizer"
            )
    own = {id(p) for p in model.parameters()}
    if any(id(p) not in own for group in optimizer.param_groups for p in group["params"]):
        raise ConfigError(
            "the optimizer holds parameters that are not the model's (was it built for another "
            "model, or before the model was copied?); pass a factory: optimizer=lambda params: "
            "torch.optim.AdamW(params, lr=1e-3)"
        )
    # L-BFGS re-evaluates the loss through a closure; every other torch optimizer steps plainly.
    return optimizer, OptimizerKind(closure=isinstance(optimizer, torch.optim.LBFGS))


def recorded_model_config(cfg: Config, model: nn.Module, spec: ModelSpec) -> ModelConfig:
    """The [model] section a run trained on a handed-in model writes: the config's own when
    it describes that very architecture (same parameter names and shapes), else a record of
    the model's class and constructor arguments (hone.models.recorded)."""
    from hone.config import from_dict
    from hone.models.recorded import model_config_section, record_model

    try:
        with torch.device("meta"):
            reference = build_model(cfg.model, spec)
        if _shapes(reference) == _shapes(model):
            return cfg.model
    except (ConfigError, TypeError, ValueError, RuntimeError):
        pass  # the config's network does not fit this data: it is not the model
    section = model_config_section(record_model(model))
    if section["name"] == "python":  # trains, but the commands cannot rebuild it: say so now
        warnings.warn(section["reason"], stacklevel=3)
    return from_dict(section, ModelConfig, "model.")


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def run_name(cfg: Config, model: nn.Module | None) -> str:
    """What a run folder is named after: the recipe, or the class of a handed-in model."""
    if cfg.recipe:
        return cfg.recipe
    return type(model).__name__.lower() if model is not None else "run"
