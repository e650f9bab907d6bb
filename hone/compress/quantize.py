"""`--quantize int8`: dynamic int8 quantization of the linear layers, for CPU inference.

Weights become int8, one scale per output channel; activations are quantized on the fly at
each call. The fp32 weights stay in the new run; the int8 model is added beside them and
recorded as an `Int8` converter (hone.engine.int8), which `LoadedRun.load` re-applies. Two
backends (the converter's runtime):

- "onnxruntime": the fp32 model is exported to ONNX by `hone.export.export_onnx` (which also
  checks it against PyTorch), then ONNX Runtime's `quantize_dynamic` makes every MatMul and
  Gemm with a constant weight int8, and every embedding table (Gather) uint8. On x86 CPUs
  without VNNI or AMX, ONNX Runtime multiplies u8 activations by s8 weights with 16-bit
  pairwise sums that can saturate; `reduce_range` keeps the weights to 7 bits so they cannot.
- "torch": torch's dynamic int8 nn.Linear (torch.ao.quantization, FBGEMM/oneDNN kernels).

"auto" picks onnxruntime on every CPU and lets the CPU's flags set `reduce_range`: on a CPU
without VNNI/AMX, torchao's int8 kernels were measured about 100x slower than fp32 while
ONNX Runtime's were about 1.9x faster (issue 11); on a CPU with AVX-512 VNNI, ONNX Runtime
was still the faster at batch 1 (BENCHMARKS.md, "Compression: int8").
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from hone.compress.base import Compressed, CompressionMethod, refuse_int8
from hone.engine.inference import LoadedRun
from hone.engine.int8 import Int8, save_int8_linears
from hone.errors import ConfigError
from hone.hardware import cpu_int8_flags
from hone.models.converters import read_records, write_records
from hone.run_files import RunFiles

BACKENDS = ("auto", "onnxruntime", "torch")
# The ONNX operators made int8: linear layers, and embedding lookups (ONNX Runtime stores a
# table as uint8 with one scale): in the char GPT the fp32 tables were 6% of the int8 file,
# and int8 ones moved the validation loss by 0.01%. Convolutions stay fp32.
ONNX_OPS = ["MatMul", "Gemm", "Gather"]


@dataclass(frozen=True)
class Backend:
    """The runtime picked for the int8 model, and why."""

    name: str  # onnxruntime | torch
    reduce_range: bool  # onnxruntime: 7-bit weights
    reason: str


def pick_backend(requested: str, flags: list[str]) -> Backend:
    """The backend for `requested` (auto, onnxruntime, torch) on a CPU with `flags`."""
    if requested not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    has = (
        f"the CPU has {', '.join(flags)}" if flags else "the CPU has no VNNI/AMX int8 instructions"
    )
    if requested == "torch":
        slow = "" if flags else "; torch's int8 kernels are slow without them"
        return Backend("torch", False, f"--backend torch; {has}{slow}")
    origin = (
        "--backend onnxruntime"
        if requested == "onnxruntime"
        else "auto: ONNX Runtime's int8 measured faster than torch's, with VNNI or without"
    )
    how = "8-bit weights" if flags else "7-bit weights (reduce_range) so int8 sums cannot saturate"
    return Backend("onnxruntime", not flags, f"{origin}; {has}: {how}")


class QuantizeInt8(CompressionMethod):
    """Dynamic int8 quantization of every linear layer (per output channel)."""

    name = "quantize-int8"
    suffix = "int8"

    def __init__(self, backend: str = "auto") -> None:
        self.flags = cpu_int8_flags()
        self.backend = pick_backend(backend, self.flags)

    def check(self, source: LoadedRun) -> None:
        refuse_int8(source)
        if not any(isinstance(m, nn.Linear) for m in source.model.modules()):
            raise ConfigError(
                f"--quantize int8 quantizes nn.Linear layers, and this {type(source.model).__name__} "
                "has none; try another compression method"
            )

    def apply(self, source: LoadedRun, out: RunFiles) -> Compressed:
        details = {
            "backend": self.backend.name,
            "cpu_int8_flags": self.flags,
            "linear_weights": "int8, symmetric, one scale per output channel",
            "activations": "int8, scale computed at each call",
            "reduce_range": self.backend.reduce_range,
        }
        int8 = Int8(self.backend.name)
        if self.backend.name == "onnxruntime":
            artifact = out.model_int8_onnx
            details["embeddings"] = "uint8, one scale per table"
            details["export_max_abs_diff"] = _quantize_onnx(source, artifact, self.backend)
        else:
            artifact = out.model_int8
            save_int8_linears(int8.convert(source.model), artifact)  # on a copy
        # After the source's own: loading builds, converts, then quantizes.
        write_records(out.converters, [*read_records(out.converters), int8.record()])
        summary = f"int8 backend: {self.backend.name} ({self.backend.reason})"
        return Compressed(artifact, summary, details)


def _quantize_onnx(source: LoadedRun, path: Path, backend: Backend) -> float:
    """Export `source` to ONNX and write its int8 graph to `path`; returns the fp32 export's
    largest difference from PyTorch."""
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        QuantType,
        quantize_dynamic,
    )

    from hone.export import export_onnx

    assert source.files is not None
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        report = export_onnx(source.files.root, Path(scratch))
        with _quiet_logging():  # its advice to pre-process the graph, on the root logger
            quantize_dynamic(
                report.path,
                path,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=backend.reduce_range,
                op_types_to_quantize=ONNX_OPS,
            )
    _strip(path)
    return report.max_abs_diff


def _strip(path: Path) -> None:
    """Drop what no runtime reads from the int8 graph: the exporter's notes on every node
    (torch stack traces and scopes), node names, intermediate shapes, and the model's
    metadata (the run's own data.json holds it). In a small model these were a fifth of the
    file."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.name = ""
    del model.graph.value_info[:]
    del model.metadata_props[:]
    onnx.save(model, str(path))


@contextmanager
def _quiet_logging() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
