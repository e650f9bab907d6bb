"""Tasks by name: the registry, the supervised tasks, and evaluation.

`TASKS` holds the built-in tasks: classification, binary, regression and the language model
(hone.engine.language_task). A user adds one by subclassing `Task` (hone.engine.task_base)
and calling `register_task` (also usable as a class decorator); runs then name it like a
built-in one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from hone.data.base import Data
from hone.engine.language_task import (
    EVAL_WINDOW_SEED,
    WHOLE_SPLIT_TOKENS,
    LanguageModel,
    whole_split,
)
from hone.engine.task_base import Batch, BatchSource, ModelLoss, Task
from hone.errors import ConfigError
from hone.metrics import Metric
from hone.registry import Registry

if TYPE_CHECKING:
    from hone.data.loaders import LoaderData


class Classification(Task):
    name, metric = "classification", "accuracy"

    def update(self, state: Any, out: torch.Tensor, y: torch.Tensor) -> Any:
        return state + (out.argmax(-1) == y).sum()

    def finish(self, state: Any, count: int, loss: float) -> float:
        return (state / count).item()

    def postprocess(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        probabilities = out.float().softmax(-1)
        return {"predictions": probabilities.argmax(-1), "probabilities": probabilities}

    def num_classes(self, num_outputs: int) -> int:
        return num_outputs

    def to_labels(self, predictions: list[Any], class_labels: list[Any]) -> list[Any]:
        return [class_labels[i] for i in predictions] if class_labels else predictions

    def prediction_columns(
        self, result: dict[str, Any], num_outputs: int, class_labels: list[Any]
    ) -> tuple[list[str], list[list[Any]]]:
        names = [str(class_labels[k] if class_labels else k) for k in range(num_outputs)]
        return class_columns(result, names)


class Binary(Task):
    name, metric = "binary", "accuracy"

    def num_classes(self, num_outputs: int) -> int:
        return 2  # one logit, two classes

    def update(self, state: Any, out: torch.Tensor, y: torch.Tensor) -> Any:
        return state + ((out.reshape(y.shape) > 0).to(y.dtype) == y).sum()

    def finish(self, state: Any, count: int, loss: float) -> float:
        return (state / count).item()

    def postprocess(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        p = out.float().reshape(len(out)).sigmoid()  # probability of class 1
        return {"predictions": (p > 0.5).long(), "probabilities": p[:, None]}

    def prediction_columns(
        self, result: dict[str, Any], num_outputs: int, class_labels: list[Any]
    ) -> tuple[list[str], list[list[Any]]]:
        return class_columns(result, ["1"])  # the probability of class 1 only


class Regression(Task):
    name, metric = "regression", "r2"

    def metric_state(self, device: torch.device) -> Any:
        return ([], [])

    def update(self, state: Any, out: torch.Tensor, y: torch.Tensor) -> Any:
        state[0].append(y.double())
        state[1].append(out.reshape(y.shape).double())
        return state

    def finish(self, state: Any, count: int, loss: float) -> float:
        y, out = torch.cat(state[0]), torch.cat(state[1])
        ss_res = ((y - out) ** 2).sum()
        ss_tot = ((y - y.mean(0)) ** 2).sum()
        return (1 - ss_res / ss_tot).item() if ss_tot > 0 else float("nan")

    def postprocess(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"predictions": out.float().reshape(len(out), -1)}


def class_columns(result: dict[str, Any], names: list[str]) -> tuple[list[str], list[list[Any]]]:
    """A classifier's predict columns: the predicted label, then p_<name> per probability."""
    columns = ["prediction", *(f"p_{name}" for name in names)]
    rows = [
        [label, *(f"{v:.6g}" for v in probabilities)]
        for label, probabilities in zip(result["predictions"], result["probabilities"], strict=True)
    ]
    return columns, rows


# Tasks by name: the name a data set declares (data.task) and a run's data.json records.
TASKS: Registry[Task] = Registry("task", "data.task")

TaskOrClass = TypeVar("TaskOrClass", bound=Task | type[Task])


def register_task(task: TaskOrClass) -> TaskOrClass:
    """Add a task under its `name`: a Task instance, or a Task subclass (then built with no
    arguments, so that this also decorates a class). Returns its argument."""
    instance = task() if isinstance(task, type) else task
    if not instance.name:
        raise ConfigError(f"{type(instance).__name__} has no name; set its class attribute `name`")
    if instance.name in TASKS:
        raise ConfigError(
            f"a task named {instance.name!r} is registered already; give "
            f"{type(instance).__name__} another name than: {', '.join(TASKS.names())}"
        )
    TASKS.add(instance.name, instance)
    return task


for _builtin in (Classification(), Binary(), Regression(), LanguageModel()):
    register_task(_builtin)


def task_of(data: Data | LoaderData) -> Task:
    """The task a data set declares."""
    return TASKS.get(data.task)


def resolve_task(task: str | Task | None, data: Data | LoaderData) -> Task:
    """The task a run learns: one handed in (an instance, or a registered name), else the
    one its data declares."""
    if isinstance(task, Task):
        return task
    return TASKS.get(task) if task is not None else task_of(data)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    loss_fn: Any,
    task: Task,
    device: torch.device,
    autocast: Any,
    extra: Mapping[str, Metric] | None = None,
    model_loss: ModelLoss | None = None,
) -> dict[str, float]:
    """Mean loss per sample (per token for language models), the task's metric and the
    `extra` (user) metrics, each computed once over the split's outputs and targets.

    With `model_loss` (the task's Task.model_loss, for a task whose metric follows from the
    loss) and no extra metrics, the model computes the loss from the targets and no outputs
    exist: a language model's whole-split batch of 16k tokens would otherwise hold 3 GB of
    logits with a 49k vocabulary."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    state = task.metric_state(device)
    outputs: list[torch.Tensor] = []  # kept only for extra metrics
    targets: list[torch.Tensor] = []
    for x, y in batches:
        n = task.samples(y)  # where the batch was drawn (the CPU): counting waits for no device
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if model_loss is not None and not extra:
            with autocast():
                total_loss += model_loss(model, x, y).double() * n
            count += n
            continue
        with autocast():
            out = model(x)
        out = out.float()
        total_loss += loss_fn(out, y).double() * n
        count += n
        state = task.update(state, out, y)
        if extra:
            outputs.append(out.cpu())
            targets.append(y.cpu())
    model.train(was_training)
    assert count > 0, "evaluated an empty split"
    loss = (total_loss / count).item()
    result = {"loss": loss, task.metric: task.finish(state, count, loss)}
    if extra:
        everything, truth = torch.cat(outputs), torch.cat(targets)
        for name, metric in extra.items():
            assert metric.fn is not None
            result[name] = float(metric.fn(everything, truth))
    return result


__all__ = [
    "EVAL_WINDOW_SEED",
    "TASKS",
    "WHOLE_SPLIT_TOKENS",
    "Batch",
    "BatchSource",
    "Binary",
    "Classification",
    "LanguageModel",
    "Regression",
    "Task",
    "evaluate",
    "register_task",
    "resolve_task",
    "task_of",
    "whole_split",
]
