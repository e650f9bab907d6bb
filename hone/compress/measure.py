"""The sides of a compression's table: size, validation metric, latency, generation speed.

Every side is measured the same way, through `LoadedRun` (whatever runs the model: PyTorch,
torch's int8 kernels, ONNX Runtime), with the thread count the caller set, its timings
taking turns with the other sides':

- `parameters`, `nonzero_parameters`: elements of the weight tensors, int8 ones included;
- `bytes`: the size of the file a deployment ships (the caller names it);
- `metric`: the gate's metric on the validation split (`gate_metric`);
- `latency_ms_batch1`, `latency_ms_batch64`: medians of `repeats` forward passes after
  WARMUP, on real validation inputs: rows, or for a language model full context windows
  (batch 1 is one next-token forward);
- `tokens_per_second` (language models): `GENERATED_TOKENS` sampled by `run.sample` after a
  full window of validation text, median of `repeats`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from hone.data import TensorData
from hone.engine.backends import OnnxModule
from hone.engine.inference import LoadedRun
from hone.engine.int8 import int8_linears
from hone.engine.tasks import Task
from hone.errors import ConfigError
from hone.metrics import direction

WARMUP = 3
LATENCY_BATCH = 64
GENERATED_TOKENS = 64


def gate_metric(task: Task) -> str:
    """What a compression is judged by: the task's metric when higher is better (accuracy,
    r2), else the loss (a language model's perplexity is only exp(loss))."""
    return task.metric if direction(task.metric) == "max" else "loss"


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(parameters, nonzero parameters) of a loaded model, whichever runtime holds it."""
    if isinstance(model, OnnxModule):
        return model.parameter_counts()
    tensors = list(model.parameters())  # unique: a tied weight counts once
    for linear in int8_linears(model).values():  # packed, so not among the parameters
        tensors.append(linear.weight().int_repr())  # type: ignore[operator]
        if linear.bias() is not None:  # type: ignore[operator]
            tensors.append(linear.bias())  # type: ignore[operator]
    return (
        sum(t.numel() for t in tensors),
        sum(int(torch.count_nonzero(t)) for t in tensors),
    )


def median_seconds(calls: Sequence[Callable[[], Any]], repeats: int) -> list[float]:
    """The median wall time of each call over `repeats` rounds, after WARMUP untimed ones.
    The calls take turns within each round, so a slow spell of a shared machine slows every
    side alike instead of the one measured during it."""
    for _ in range(WARMUP):
        for call in calls:
            call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for call, series in zip(calls, times, strict=True):
            start = time.perf_counter()
            call()
            series.append(time.perf_counter() - start)
    return [statistics.median(series) for series in times]


def _forward(run: LoadedRun, x: torch.Tensor) -> Callable[[], Any]:
    def call() -> Any:
        with run.precision.autocast():
            return run.model(x)

    return call


def validation_inputs(run: LoadedRun, rows: int) -> torch.Tensor:
    """`rows` real model inputs from the validation split (rows repeated when it has fewer)."""
    from hone.data import build_data

    data = build_data(run.cfg)
    if not run.task.has_split(data, "val"):
        raise ConfigError(
            "this run has no validation split to measure the compressed model on; "
            "retrain it with --data.val_fraction above 0"
        )
    if isinstance(data, TensorData):
        x = data.val[0]
        return x.repeat(math.ceil(rows / len(x)), *[1] * (x.ndim - 1))[:rows]
    batches = run.task.eval_batches(data, "val", rows, run.task.context_length(run.spec), 1)
    return next(iter(batches))[0]  # (rows, context) windows of the validation text


def measure(
    runs: Sequence[LoadedRun], weights_bytes: Sequence[int], repeats: int = 10
) -> list[dict[str, Any]]:
    """One side of the table for each run (the same model, compressed in different ways),
    whose deployed files have `weights_bytes` bytes; the timings take turns (`median_seconds`)
    on the same inputs, drawn from the first run's validation split."""
    first = runs[0]
    x = validation_inputs(first, LATENCY_BATCH)  # (64, ...) rows or token windows
    with torch.inference_mode():
        batch1 = median_seconds([_forward(run, x[:1].to(run.device)) for run in runs], repeats)
        batch64 = median_seconds([_forward(run, x.to(run.device)) for run in runs], repeats)
    sides = []
    for run, size, one, many in zip(runs, weights_bytes, batch1, batch64, strict=True):
        name = gate_metric(run.task)
        parameters, nonzero = parameter_counts(run.model)
        sides.append(
            {
                "parameters": parameters,
                "nonzero_parameters": nonzero,
                "bytes": size,
                "metric": {"name": name, "value": run.evaluate("val")[name]},
                "latency_ms_batch1": one * 1e3,
                "latency_ms_batch64": many * 1e3,
            }
        )
    if first.task.generates_text:
        assert first.tokenizer is not None
        prompt = first.tokenizer.decode(x[0].tolist())  # a full window of validation text
        samples = [lambda run=run: run.sample(prompt, GENERATED_TOKENS, seed=0) for run in runs]
        for side, seconds in zip(sides, median_seconds(samples, repeats), strict=True):
            side["tokens_per_second"] = GENERATED_TOKENS / seconds
    return sides
