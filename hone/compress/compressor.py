"""`compress(run, method)`: the steps every compression method shares.

Load the source run and let the method refuse it (nothing written); stage the new run
directory; let the method write its model there; load that run the way `hone eval` would;
measure both side by side; apply the gate; write compress.json and move the stage into
place. The measurements run with `threads` torch (and ONNX Runtime) threads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from hone.compress.base import CompressionMethod
from hone.compress.measure import measure, validation_inputs
from hone.compress.report import gate, gate_message
from hone.compress.run import check_output, default_output, publish, staged_run
from hone.engine.inference import LoadedRun
from hone.errors import ConfigError, GateFailed

DEFAULT_MAX_DROP = 1.0  # points of accuracy, or percent of a loss
DEFAULT_REPEATS = 10


def compress(
    run: str | Path,
    method: CompressionMethod,
    output: str | Path | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
    repeats: int = DEFAULT_REPEATS,
    threads: int = 1,
    log: Callable[[str], None] = lambda line: None,
    data: Sequence[str] = (),
) -> tuple[dict[str, Any], Path]:
    """Compress a finished run into `output` (default RUN-<method suffix>); returns the table
    (also written as OUTPUT/compress.json) and the output path. `data`: `data.*` overrides
    naming the data both models are measured on (a run trained on data handed in from Python
    keeps none).

    Raises ConfigError, before writing anything, for a bad run, output or method; GateFailed
    (with the table, and nothing written) when the validation metric dropped by more than
    `max_drop`.
    """
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {repeats}")
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    if math.isnan(max_drop):
        raise ConfigError("--max-drop must be a number, got nan")
    target = Path(output) if output is not None else default_output(run, method.suffix)
    check_output(target)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        source = LoadedRun.load(run, "cpu", data)
        method.check(source)
        assert source.files is not None
        validation_inputs(source, 1)  # a run without a validation split fails here
        with staged_run(source.files, target) as stage:
            compressed = method.apply(source, stage)
            log(compressed.summary)
            log(f"measuring both models ({repeats} repeats, {threads} thread(s))")
            sizes = [source.files.model.stat().st_size, compressed.artifact.stat().st_size]
            staged = LoadedRun.load(stage.root, "cpu", data)
            original, after = measure([source, staged], sizes, repeats)
            table: dict[str, Any] = {
                "method": method.name,
                "source": str(Path(run)),
                "details": compressed.details,
                "threads": threads,
                "repeats": repeats,
                "gate": gate(original, after, max_drop),
                "original": original,
                "compressed": after,
            }
            if not table["gate"]["passed"]:
                raise GateFailed(gate_message(table), table)
            stage.compress.write_text(json.dumps(table, indent=2) + "\n")
            publish(stage, target)
    finally:
        torch.set_num_threads(previous)
    return table, target
