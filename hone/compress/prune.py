"""`--prune RATIO [--structured] [--finetune-steps N] [--iterations K]`: fewer weights.

- structured (`--structured`): whole hidden units, channels and attention heads are removed,
  so the matrices shrink and the model is faster (hone.compress.structured, Torch-Pruning).
  The new widths are recorded as a converter (`PrunedShapes`), which loading re-applies.
- unstructured: global magnitude pruning of every linear and convolution weight
  (torch.nn.utils.prune.global_unstructured, L1), made permanent with `prune.remove`: the
  same shapes, RATIO of those weights zero (`nonzero_parameters` shows it).

Then `--finetune-steps N` steps of hone's Trainer, with the run's own config and data; the
zeros of unstructured pruning are kept by an observer (`KeepZeros`). With `--iterations K`,
K rounds of pruning a share then fine-tuning N / K steps, the widths (or the sparsity)
stepping linearly to RATIO. The last round trains into the new run directory; the earlier
rounds into scratch folders.
"""

from __future__ import annotations

import copy
import json
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hone.compress.base import Compressed, CompressionMethod, refuse_int8
from hone.compress.measure import parameter_counts, validation_inputs
from hone.compress.run import save_model
from hone.compress.structured import CHANNEL_LAYERS, StructuredPruner, check_structured
from hone.compress.training import fine_tune_config, last_validation, train_into
from hone.engine.inference import LoadedRun
from hone.engine.observers import Observer
from hone.errors import ConfigError
from hone.models.converters import PrunedShapes, size_attributes, tensor_shapes
from hone.run_files import RunFiles

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, "weight") for every linear and convolution layer, each tensor once (a tied
    output layer shares its embedding's)."""
    seen: set[int] = set()
    targets: list[tuple[nn.Module, str]] = []
    for module in model.modules():
        if isinstance(module, CHANNEL_LAYERS) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            targets.append((module, "weight"))
    return targets


def prune_unstructured(model: nn.Module, sparsity: float) -> None:
    """Zero the `sparsity` share of smallest-magnitude weights over all linear and
    convolution layers together (zeros already there count as smallest)."""
    from torch.nn.utils import prune

    targets = prunable_weights(model)
    total = sum(getattr(m, name).numel() for m, name in targets)
    prune.global_unstructured(
        targets, pruning_method=prune.L1Unstructured, amount=round(sparsity * total)
    )
    for module, name in targets:
        prune.remove(module, name)  # the mask is applied to the tensor itself, and dropped


class KeepZeros(Observer):
    """Keeps pruned weights at zero while fine-tuning: their gradients are zeroed after each
    backward pass, so the optimizer's state never sees them, and the weights again after each
    step, for an optimizer that moves a weight without a gradient."""

    def __init__(self, weights: list[torch.Tensor]) -> None:
        self.weights = weights
        self.masks: list[torch.Tensor] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        self.masks = [w != 0 for w in self.weights]  # on the trainer's device by now

    def on_after_backward(self, trainer: Trainer) -> None:
        for weight, mask in zip(self.weights, self.masks, strict=True):
            if weight.grad is not None:
                weight.grad.mul_(mask)

    @torch.no_grad()
    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        for weight, mask in zip(self.weights, self.masks, strict=True):
            weight.mul_(mask)


def split_steps(steps: int, parts: int) -> list[int]:
    """`steps` in `parts` near-equal shares, the larger ones last."""
    return [steps // parts + (i >= parts - steps % parts) for i in range(parts)]


class Prune(CompressionMethod):
    """Structured or unstructured magnitude pruning, then fine-tuning."""

    name = "prune"

    def __init__(
        self, ratio: float, structured: bool = False, finetune_steps: int = 0, iterations: int = 1
    ) -> None:
        if not 0 < ratio < 1:
            raise ConfigError(
                f"--prune must be a fraction strictly between 0 and 1, got {ratio:g}; "
                "e.g. --prune 0.5 removes half"
            )
        if finetune_steps < 0:
            raise ConfigError(f"--finetune-steps must be 0 or more, got {finetune_steps}")
        if iterations < 1:
            raise ConfigError(f"--iterations must be at least 1, got {iterations}")
        if iterations > 1 and finetune_steps < iterations:
            raise ConfigError(
                f"--iterations {iterations} fine-tunes between the pruning steps; set "
                f"--finetune-steps to at least {iterations}, got {finetune_steps}"
            )
        self.ratio, self.structured = ratio, structured
        self.finetune_steps, self.iterations = finetune_steps, iterations
        self.suffix = f"pruned{'-structured' if structured else ''}"

    def check(self, source: LoadedRun) -> None:
        refuse_int8(source)
        model = source.model
        if self.structured:
            check_structured(copy.deepcopy(model), validation_inputs(source, 1), self.ratio)
        elif not prunable_weights(model):
            raise ConfigError(
                f"--prune zeroes weights of linear and convolution layers, and this "
                f"{type(model).__name__} has none; try another compression method"
            )

    def apply(self, source: LoadedRun, out: RunFiles) -> Compressed:
        model = copy.deepcopy(source.model)  # the source is measured beside it afterwards
        shapes, sizes = tensor_shapes(model), size_attributes(model)
        pruner = None
        if self.structured:
            pruner = StructuredPruner(
                model, validation_inputs(source, 1), self.ratio, self.iterations
            )
        history = []
        steps = split_steps(self.finetune_steps, self.iterations)
        with tempfile.TemporaryDirectory(prefix=".prune-", dir=out.root.parent) as scratch:
            for i, round_steps in enumerate(steps, 1):
                if pruner is not None:
                    pruner.step()
                else:
                    prune_unstructured(model, self.ratio * i / self.iterations)
                parameters, nonzero = parameter_counts(model)
                entry: dict[str, Any] = {
                    "iteration": i,
                    "parameters": parameters,
                    "nonzero_parameters": nonzero,
                    "finetune_steps": round_steps,
                }
                if round_steps:
                    into = out if i == self.iterations else RunFiles(Path(scratch) / str(i))
                    observers = [] if self.structured else [KeepZeros(_weights(model))]
                    trainer = train_into(
                        fine_tune_config(source.cfg, round_steps),
                        into,
                        model=model,
                        observers=observers,
                    )
                    model.to("cpu").eval()
                    entry.update(last_validation(trainer))
                history.append(entry)
        records = _records(source)
        if self.structured:
            records.append(PrunedShapes.between(self.ratio, shapes, sizes, model).record())
        save_model(model, records, out)
        return Compressed(out.model, self._summary(history), self._details(history))

    def _summary(self, history: list[dict[str, Any]]) -> str:
        last = history[-1]
        what = "structured" if self.structured else "unstructured"
        tuned = (
            f"fine-tuned {self.finetune_steps} steps in {self.iterations} round(s)"
            if self.finetune_steps
            else "not fine-tuned (--finetune-steps 0)"
        )
        return (
            f"{what} pruning of {self.ratio:.0%}: {last['parameters']:,} parameters, "
            f"{last['nonzero_parameters']:,} nonzero; {tuned}"
        )

    def _details(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        if self.structured:
            how = (
                f"hidden units, channels and attention heads of least L2 norm, the same share "
                f"of every layer (torch-pruning {version('torch-pruning')})"
            )
        else:
            how = "weights of least magnitude over all linear and convolution layers together (torch.nn.utils.prune, global L1)"
        return {
            "structured": self.structured,
            "ratio": self.ratio,
            "pruned": how,
            "finetune_steps": self.finetune_steps,
            "iterations": self.iterations,
            "rounds": history,
        }


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [getattr(module, name) for module, name in prunable_weights(model)]


def _records(source: LoadedRun) -> list[dict[str, Any]]:
    """The source's own converter records, which the new run keeps first."""
    assert source.files is not None
    if not source.files.converters.is_file():
        return []
    return list(json.loads(source.files.converters.read_text())["converters"])
