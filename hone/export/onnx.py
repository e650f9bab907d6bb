"""`hone export --format onnx`: the model as an ONNX graph, checked against PyTorch.

torch.onnx's dynamo exporter captures the model with torch.export (a dynamic batch size, and
for language models a dynamic sequence length up to the context) and translates the graph to
ONNX. Every export is then checked: ONNX Runtime and PyTorch run the same inputs, random ones
and real ones from the run's data, each at two shapes. The largest absolute difference is
stored beside the file; over the tolerance the export fails and leaves nothing behind.

The graph takes what the model's forward takes: float32 features (B, *input_shape), already
preprocessed, or int64 token ids (B, T). The preprocessing and the class labels ride along as
the model's metadata (`hone.data_info`, the run's data.json).
"""

from __future__ import annotations

import io
import json
import linecache
import logging
import os
import re
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hone.engine.backends import OnnxModule, recorded_converters
from hone.engine.inference import LoadedRun, run_files
from hone.engine.int8 import Int8
from hone.errors import ConfigError, ExportMismatch
from hone.finetune.lora import dequantize_bases
from hone.run_files import ONNX, parity_report, staging_folder

DEFAULT_TOLERANCE = 1e-4
MIN_OPSET = 18  # the oldest opset the dynamo exporter writes
CHECK_ROWS = 7  # the larger batch of the parity checks; the smaller is 1


@dataclass
class ParityCheck:
    """One comparison of ONNX Runtime with PyTorch."""

    inputs: str  # random | data
    shape: list[int]
    max_abs_diff: float


@dataclass
class ExportReport:
    """What `export_onnx` wrote and how closely ONNX Runtime follows PyTorch."""

    path: Path
    parity_path: Path
    tolerance: float
    opset: int
    checks: list[ParityCheck] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max(check.max_abs_diff for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        import onnxruntime  # type: ignore[import-untyped]

        return {
            "model": self.path.name,
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "checks": [asdict(check) for check in self.checks],
            "opset": self.opset,
            "torch_version": torch.__version__,
            "onnxruntime_version": onnxruntime.__version__,
        }


def export_onnx(
    run: str | Path,
    output: str | Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
) -> ExportReport:
    """Export a run's (or a bundle's) model to ONNX at `output` (default RUN/model.onnx; a
    folder, or a path ending in /, gets model.onnx inside), check it against PyTorch and store the check beside it.

    Raises ConfigError when torch cannot export the model (naming the module and the line),
    ExportMismatch when ONNX Runtime differs from PyTorch by more than `tolerance`.
    """
    if opset is not None and opset < MIN_OPSET:
        raise ConfigError(
            f"--opset must be at least {MIN_OPSET} (the dynamo exporter's), got {opset}"
        )
    if not tolerance >= 0:
        raise ConfigError(f"--tolerance must be at least 0, got {tolerance}")
    int8 = [c for c in recorded_converters(run_files(run)) if isinstance(c, Int8)]
    if int8:  # `hone compress --quantize int8` made it
        graph = f"; {int8[-1].file} is its ONNX graph already" if int8[-1].graph else ""
        raise ConfigError(
            f"{run} runs an int8 model ({int8[-1].file}); export the run it was made from "
            f"for the fp32 model{graph}"
        )
    loaded = LoadedRun.load(run, "cpu", backend="torch")
    assert loaded.files is not None
    path = Path(output) if output is not None else loaded.files.onnx
    if path.is_dir() or str(output).endswith(("/", os.sep)):
        path = path / ONNX
    # ONNX has no NF4: a QLoRA run's 4-bit base goes in as the dense weights it computes with
    model = dequantize_bases(loaded.model).float().eval()
    program = _export(model, loaded, opset)
    with staging_folder(path) as staging:
        staged = staging / path.name
        program.save(str(staged))  # weights inside the file, unless over protobuf's 2 GB
        report = ExportReport(path, parity_report(path), tolerance, _opset(program))
        report.checks = check_parity(staged, model, _inputs(loaded))
        if not report.max_abs_diff <= tolerance:
            worst = max(report.checks, key=lambda check: check.max_abs_diff)
            raise ExportMismatch(
                f"ONNX Runtime differs from PyTorch by {report.max_abs_diff:.3g} (max abs, "
                f"{worst.inputs} inputs of shape {worst.shape}), over --tolerance {tolerance:g}; "
                "nothing written"
            )
        parity_report(staged).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        # The graph last: once model.onnx is in place, its weights and its report are too.
        for item in sorted(staging.iterdir(), key=lambda p: p == staged):
            os.replace(item, path.parent / item.name)
    return report


def _export(model: nn.Module, loaded: LoadedRun, opset: int | None) -> torch.onnx.ONNXProgram:
    """The torch.onnx.ONNXProgram of `model`, with the batch (and token) axes dynamic."""
    spec, task = loaded.spec, loaded.task
    batch = torch.export.Dim("batch", min=1)
    # Zeros of the shape and dtype of the model's inputs (token ids or features).
    example = torch.zeros_like(task.random_inputs(spec, 2, torch.Generator()))
    tokens = task.context_length(spec)  # windows of token ids may also be shorter
    # A dimension of one is specialized by torch.export; only a longer one can vary.
    axes = (
        {0: batch, 1: torch.export.Dim("tokens", min=1, max=tokens)} if tokens > 1 else {0: batch}
    )
    try:
        with _quiet():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                dynamic_shapes=(axes,),
                input_names=[task.input_name],
                output_names=["outputs"],
                opset_version=opset,
                verbose=False,
            )
    except torch.onnx.OnnxExporterError as e:
        raise ConfigError(_explain(model, e)) from None
    assert program is not None  # dynamo=True always returns the program
    if opset is not None and _opset(program) != opset:  # torch falls back instead of failing
        raise ConfigError(
            f"torch {torch.__version__} cannot write opset {opset} (it wrote {_opset(program)}); "
            "choose a lower --opset"
        )
    program.model.metadata_props.update(
        {
            "hone.task": spec.task,
            "hone.recipe": loaded.cfg.recipe,
            "hone.data_info": json.dumps(loaded.info),
        }
    )
    return program


def _opset(program: torch.onnx.ONNXProgram) -> int:
    return int(program.model.opset_imports[""])


def _inputs(loaded: LoadedRun) -> dict[str, torch.Tensor]:
    """CHECK_ROWS random and CHECK_ROWS real inputs: rows of the validation split (the
    training split when there is none), or token windows of the validation text; random only
    for a run trained on data handed in from Python."""
    from hone.data import build_data
    from hone.data.from_python import DataNotHeld

    spec, task = loaded.spec, loaded.task
    tokens = task.context_length(spec)
    noise = task.random_inputs(spec, CHECK_ROWS, torch.Generator().manual_seed(0))
    try:
        data = build_data(loaded.cfg)
    except DataNotHeld:  # data handed in from Python, gone with its process: random only
        return {"random": noise}
    split = "val" if task.has_split(data, "val") else "train"
    real, _ = next(iter(task.eval_batches(data, split, CHECK_ROWS, tokens, num_batches=1)))
    return {"random": noise, "data": real}


def check_parity(
    path: Path, model: nn.Module, inputs: dict[str, torch.Tensor]
) -> list[ParityCheck]:
    """Run ONNX Runtime (as the onnx backend runs the graph) and `model` on each input at two
    shapes: one row of the full length, and all rows (for token ids, of half the length); the
    max abs difference of each."""
    import numpy as np

    graph = OnnxModule(path)
    checks = []
    for kind, x in inputs.items():
        views = [x[:1], x[:, : max(1, x.shape[1] // 2)] if x.dtype == torch.long else x]
        for view in views:
            with torch.no_grad():
                expected = model(view).float().numpy()
            got = graph(view).numpy()
            diff = np.abs(got - expected).max() if got.shape == expected.shape else np.inf
            checks.append(ParityCheck(kind, list(view.shape), float(diff)))
    return checks


@contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporter's progress lines, graph dumps and warnings off the terminal: an
    export either succeeds or fails with one line."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with (
            warnings.catch_warnings(),
            redirect_stdout(io.StringIO()),
            redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _explain(model: nn.Module, error: BaseException) -> str:
    """One line: the module and line of the model's code that torch could not export, why,
    and what to do."""
    chain = [error]
    while (
        cause := chain[-1].__cause__ or chain[-1].__context__
    ) is not None and cause not in chain:
        chain.append(cause)
    first_line = re.sub(r"\x1b\[[0-9;]*m", "", str(chain[-1])).strip().split("\n", 1)[0]
    reason = re.split(r"(?<=\.)\s", first_line, maxsplit=1)[0].rstrip(".")  # 1st sentence
    return (
        f"torch cannot export the model to ONNX: {_culprit(model, chain)}: {reason[:200]}; "
        "make that forward traceable by torch.export (no Python branch on a tensor's value: "
        "use torch.where or torch.cond), or export with --format safetensors"
    )


def _culprit(model: nn.Module, chain: list[BaseException]) -> str:
    """The deepest frame of the model's own modules in the tracebacks: which module, where."""
    names = {id(module): name for name, module in model.named_modules()}
    found = None
    for error in chain:
        for frame, line in traceback.walk_tb(error.__traceback__):
            owner = frame.f_locals.get("self")
            if owner is not None and id(owner) in names:
                found = (names[id(owner)], owner, frame.f_code.co_filename, line)
    if found is None:
        return type(model).__name__
    name, owner, filename, line = found
    which = f"module {name!r} ({type(owner).__name__})" if name else type(owner).__name__
    code = linecache.getline(filename, line).strip()
    return f"{which} at {filename}:{line}" + (f" `{code}`" if code else "")
