"""`--prune RATIO [--structured] [--finetune-steps N] [--iterations K]`: fewer weights.

- structured (`--structured`): whole hidden units, channels and attention heads are removed,
  so the matrices shrink and the model is faster (hone.compress.structured, Torch-Pruning).
  The new widths are recorded as a converter (`PrunedShapes`), which loading re-applies.
- unstructured: the `MagnitudePrune` converter, global magnitude pruning of every linear
  and convolution weight: the same shapes, RATIO of those weights zero (`nonzero_parameters`
  shows it).

Then `--finetune-steps N` steps of hone's Trainer, with the run's own config and data. The
trainer is handed the pruned model with the source's converters and the pruning's own in
record-only mode: it records them all in the new run (and its own weights), and the
unstructured converter's post-optimizer-step hook keeps the zeros. With `--iterations K`, K
rounds of pruning a share then fine-tuning N / K steps, the widths (or the sparsity)
stepping linearly to RATIO. The last round trains into the new run directory; the earlier
rounds into scratch folders.
"""

from __future__ import annotations

import copy
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from hone.compress.base import Compressed, CompressionMethod, refuse_int8
from hone.compress.measure import parameter_counts, validation_inputs
from hone.compress.run import save_model
from hone.compress.structured import StructuredPruner, check_structured
from hone.compress.training import fine_tune_config, last_validation, train_into
from hone.engine.backends import recorded_converters
from hone.engine.inference import LoadedRun
from hone.errors import ConfigError
from hone.models.converters import (
    MagnitudePrune,
    ModelConverter,
    PrunedShapes,
    prunable_weights,
    size_attributes,
    tensor_shapes,
)
from hone.run_files import RunFiles


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
        assert source.files is not None
        # The source's conversions, kept first; its model is converted by them already.
        kept = [c.as_record_only() for c in recorded_converters(source.files)]
        history = []
        steps = split_steps(self.finetune_steps, self.iterations)
        converter: ModelConverter
        with tempfile.TemporaryDirectory(prefix=".prune-", dir=out.root.parent) as scratch:
            for i, round_steps in enumerate(steps, 1):
                share = self.ratio * i / self.iterations
                if pruner is not None:
                    pruner.step()
                    converter = PrunedShapes.between(share, shapes, sizes, model)
                else:
                    converter = MagnitudePrune(share)
                    model = converter.convert(model)
                parameters, nonzero = parameter_counts(model)
                entry: dict[str, Any] = {
                    "iteration": i,
                    "parameters": parameters,
                    "nonzero_parameters": nonzero,
                    "finetune_steps": round_steps,
                }
                if round_steps:
                    into = out if i == self.iterations else RunFiles(Path(scratch) / str(i))
                    # The trainer records every conversion and writes its own weights.
                    trainer = train_into(
                        fine_tune_config(source.cfg, round_steps),
                        into,
                        model=model,
                        converters=[*kept, converter.as_record_only()],
                    )
                    model.to("cpu").eval()
                    entry.update(last_validation(trainer))
                history.append(entry)
        if not steps[-1]:  # not fine-tuned: nothing trained into `out`
            save_model(model, [c.record() for c in [*kept, converter]], out)
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
