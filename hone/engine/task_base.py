"""The Task interface: every rule that follows from the kind of target a run learns.

A task knows the metric it is judged by, the model spec its data implies, what the run
directory keeps to read inputs again, how its evaluation batches are drawn, how a batch's
outputs update that metric and how raw model outputs become predictions. The trainer, eval,
predict, sample, export, serve and the tuner ask the task instead of testing a task name;
the built-in tasks and their registry are in hone.engine.tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from hone.config import LossConfig, TrainConfig
from hone.data import Preprocessor, TensorData, TokenData
from hone.data.base import Data, ExampleData, Tokenizer
from hone.losses import build_loss
from hone.models import ModelSpec
from hone.run_files import RunFiles

if TYPE_CHECKING:
    from hone.data.loaders import LoaderData
    from hone.distributed.strategy import Strategy

Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs, targets)
# (forward, inputs, targets) -> the mean loss: a loss the model computes from the targets
ModelLoss = Callable[[Callable[..., torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor]


@runtime_checkable
class BatchSource(Protocol):
    """Data that draws its own batches (hone.data.loaders.LoaderData around a user's loader):
    `(x, y)` pairs already normalized, split by split."""

    def batches(self, split: str) -> Iterable[Batch]: ...

    def has(self, split: str) -> bool: ...


class Task:
    """The rules of one kind of target. Subclass it and `register_task` it to add a task.

    A subclass sets `name` and `metric` and implements the metric (`update`, `finish`) and
    `postprocess`; every other rule has the default of a supervised task whose samples are
    feature arrays (or a loader's batches) and whose model outputs one row per sample.
    """

    name = ""
    metric = ""  # the task's own metric, besides the loss; its direction is in hone.metrics
    splits: tuple[str, ...] = ("train", "val", "test")
    # Evaluate at the end of each epoch when train.eval_every is 0.
    evaluates_each_epoch = True
    # A model that writes text: sampled from (`hone sample`, serve's completions), not predicted
    # with, and sampled during training when train.sample_tokens > 0.
    generates_text = False
    data_unit = "samples"  # what `samples(y)` counts: a federated client's share is told in it
    input_name = "features"  # the model input's name in an exported ONNX graph

    # ----------------------------------------------------------------- shapes and run files
    def spec(self, data: Data | LoaderData, context_length: int = 0) -> ModelSpec:
        """The model's shapes that `data` implies."""
        assert not isinstance(data, TokenData | ExampleData), (
            f"tokens are no data for a {self.name} task"
        )
        return ModelSpec(self.name, tuple(data.input_shape), data.num_outputs)

    def info(self, data: Data | LoaderData, spec: ModelSpec) -> dict[str, Any]:
        """What eval, predict and serve need to read inputs as training did (RUN/data.json)."""
        assert not isinstance(data, TokenData | ExampleData), (
            f"tokens are no data for a {self.name} task"
        )
        # A loader's data has no preprocessing of hone's, feature names or class labels.
        preprocessor = getattr(data, "preprocessor", None) or Preprocessor()
        return {
            "task": self.name,
            "input_shape": list(data.input_shape),
            "num_outputs": data.num_outputs,
            "feature_names": list(getattr(data, "feature_names", None) or []),
            "preprocessor": preprocessor.state_dict(),
            "class_labels": list(getattr(data, "class_labels", None) or []),
        }

    def spec_from_info(self, info: dict[str, Any], context_length: int = 0) -> ModelSpec:
        """The spec a run trained with, from its data.json (the inverse of `info`)."""
        return ModelSpec(self.name, tuple(info["input_shape"]), info["num_outputs"])

    def save_input_files(self, data: Data | LoaderData, files: RunFiles) -> None:
        """Files beside data.json that reading inputs as in training needs (a tokenizer)."""

    def input_readers(
        self, files: RunFiles, info: dict[str, Any]
    ) -> tuple[Tokenizer | None, Preprocessor | None]:
        """(tokenizer, preprocessor) of a saved run: what turns raw inputs into model inputs."""
        preprocessor = Preprocessor()
        preprocessor.load_state_dict(info["preprocessor"])
        return None, preprocessor

    def context_length(self, spec: ModelSpec) -> int:
        """Tokens per window of a model that reads token windows; 0 for other inputs."""
        return 0

    def num_classes(self, num_outputs: int) -> int:
        """Classes the targets are labels of, for a model of `num_outputs` outputs; 0 when
        the targets are no class labels (federated partitions by class count them)."""
        return 0

    def tokens_per_sample(self, spec: ModelSpec) -> int:
        """Tokens in one sample, for a tokens/s throughput; 0 reports samples/s only."""
        return 0

    def random_inputs(self, spec: ModelSpec, rows: int, generator: torch.Generator) -> torch.Tensor:
        """`rows` random model inputs of the right shape and dtype (export's parity check)."""
        return torch.randn(rows, *spec.input_shape, generator=generator)

    # ----------------------------------------------------------------- batches and loss
    def samples(self, y: torch.Tensor) -> int:
        """How many loss terms a batch with targets `y` averages over."""
        return len(y)

    def accumulation_weights(
        self, batches: list[Batch], strategy: Strategy | None = None
    ) -> torch.Tensor | None:
        """The weight (K,) of each of this process's K micro-batch mean losses in the step's
        loss (under a `strategy`, whose ranks average their gradients: in this rank's share
        of it); None: 1/K each, right when every micro-batch averages as many loss terms."""
        return None

    def loss(self, cfg: LossConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The loss `loss.name` names, refused when it does not fit this task."""
        return build_loss(cfg, self.name)

    def model_loss(self, model: torch.nn.Module, cfg: LossConfig) -> ModelLoss | None:
        """How training steps get the loss from the model itself, `model_loss(forward, x, y)`,
        when the model computes `loss.name` better than `loss(model(x), y)` would; None (the
        default) when it does not."""
        return None

    def eval_batch_size(self, train: TrainConfig) -> int:
        """Samples per evaluation batch."""
        return train.eval_batch_size

    def eval_batches(
        self,
        data: Data | LoaderData,
        split: str,
        batch_size: int,
        context_length: int = 0,
        num_batches: int = 0,
        rank: int = 0,
        world_size: int = 1,
        grad_accum: int = 1,
    ) -> Iterable[Batch]:
        """The batches of `split` that an evaluation runs over: the whole split, in order (a
        loader's batches as it draws them)."""
        if isinstance(data, BatchSource):
            return data.batches(split)
        assert isinstance(data, TensorData)
        x, y = getattr(data, split)
        return (
            (x[start : start + batch_size], y[start : start + batch_size])
            for start in range(0, len(x), batch_size)
        )

    def has_split(self, data: Data | LoaderData, split: str) -> bool:
        if isinstance(data, BatchSource):
            return data.has(split)
        assert isinstance(data, TensorData)
        return len(getattr(data, split)[0]) > 0

    # ----------------------------------------------------------------- the metric
    # The metric over several batches: start, add each batch, finish.
    def metric_state(self, device: torch.device) -> Any:
        return torch.zeros((), dtype=torch.float64, device=device)

    def update(self, state: Any, out: torch.Tensor, y: torch.Tensor) -> Any:
        raise NotImplementedError

    def finish(self, state: Any, count: int, loss: float) -> float:
        raise NotImplementedError

    def reduce_over_ranks(self, result: dict[str, float], strategy: Strategy) -> dict[str, float]:
        """One evaluation's numbers for every rank. Every rank evaluated the whole split, so
        rank 0's numbers decide for all."""
        return strategy.broadcast_metrics(result)

    # ----------------------------------------------------------------- predictions
    def postprocess(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs (N, ...) to {"predictions": ..., "probabilities": ... (classifiers)}."""
        raise NotImplementedError

    def to_labels(self, predictions: list[Any], class_labels: list[Any]) -> list[Any]:
        """Predictions as the user's labels (classes are indices inside hone)."""
        return predictions

    def prediction_columns(
        self, result: dict[str, Any], num_outputs: int, class_labels: list[Any]
    ) -> tuple[list[str], list[list[Any]]]:
        """The columns `hone predict` adds to each row (names, then one list per row), from
        `LoadedRun.predict`'s result: one column per output, `prediction` when there is one."""
        rows = [row if isinstance(row, list) else [row] for row in result["predictions"]]
        width = len(rows[0]) if rows else 1
        names = ["prediction"] if width == 1 else [f"prediction_{k}" for k in range(width)]
        return names, [[f"{v:.6g}" for v in row] for row in rows]
