"""Inference backends, chosen by name: what runs the model of a loaded run.

`LoadedRun.load(run, backend=...)` builds the model from the run's config, re-applies its
recorded converters (hone.models.converters) and hands it to a backend, which makes it
ready for one runtime:

- "torch": PyTorch eager on the requested device, with the run's safetensors weights (or
  the weights a converter stores its own way: torch's int8);
- "onnx": ONNX Runtime on the CPU, running the graph a converter names (an int8 run's) or
  the one `hone export RUN --format onnx` wrote;
- "auto" (the default): onnx for a run whose converted model exists only as a graph (int8
  through ONNX Runtime), torch for every other.

`hone eval`, `predict`, `sample` and `serve` all take `--backend`, so each of them runs an
exported or quantized graph the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hone.config import Config
from hone.engine import int8  # noqa: F401  (registers the int8 converter)
from hone.engine.runtime import resolve_device
from hone.errors import ConfigError
from hone.finetune import lora  # noqa: F401  (registers the lora converter)
from hone.models import ModelSpec, build_model
from hone.models.converters import ModelConverter, converter_from_record, read_records
from hone.registry import Registry
from hone.run_files import RunFiles

# ONNX Runtime's dynamic quantization stores each weight as NAME_quantized (int8) with
# NAME_scale and NAME_zero_point: per-channel bookkeeping, not parameters.
_QUANT_BOOKKEEPING = ("_scale", "_zero_point")


@dataclass
class BuiltModel:
    """A run's model before its weights: built from the config, its converters applied."""

    files: RunFiles
    model: nn.Module
    converters: list[ModelConverter]
    precision: str  # what it trained in (train.precision)
    context_length: int  # tokens per window of a language model; 0 for other inputs


class Backend:
    """Makes a `BuiltModel` ready to run on one runtime; each registers an instance."""

    name = ""
    runtime = ""  # what runs the model, as `hone serve` reports it

    def choose(self, converters: list[ModelConverter]) -> Backend:
        """The backend that runs a model `converters` made: this one ("auto" picks)."""
        return self

    def check(self, files: RunFiles, converters: list[ModelConverter]) -> None:
        """A ConfigError when this backend cannot run the run, before anything is loaded."""

    def load(self, built: BuiltModel, device: str) -> tuple[nn.Module, torch.device, str]:
        """(the module to call, its device, the precision it runs in)."""
        raise NotImplementedError


BACKENDS: Registry[Backend] = Registry("inference backend", "backend")


def recorded_converters(files: RunFiles) -> list[ModelConverter]:
    """The converters a run recorded (converters.json), in order."""
    return [converter_from_record(record) for record in read_records(files.converters)]


def choose_backend(name: str, files: RunFiles) -> Backend:
    """The backend `name` ("auto" resolved) for the run in `files`, checked against it."""
    converters = recorded_converters(files)
    backend = BACKENDS.get(name).choose(converters)
    backend.check(files, converters)
    return backend


def _on_cpu(device: str, files: RunFiles, what: str) -> torch.device:
    """The CPU, for a model that runs nowhere else; a ConfigError for another device."""
    if device != "auto" and torch.device(device).type != "cpu":
        raise ConfigError(f"{files.root} {what}, which runs on the CPU; pass --device cpu")
    return torch.device("cpu")


class TorchBackend(Backend):
    name = runtime = "torch"

    def load(self, built: BuiltModel, device: str) -> tuple[nn.Module, torch.device, str]:
        from safetensors.torch import load_model

        cpu_only = any(c.cpu_only for c in built.converters)
        if cpu_only:  # int8 kernels, with fp32 activations
            dev = _on_cpu(device, built.files, "holds an int8 model")
        else:
            dev = resolve_device(device)
        model, precision = built.model.to(dev), "fp32" if cpu_only else built.precision
        # The last converter that stores its model's weights its own way loads them.
        for converter in reversed(built.converters):
            loaded = converter.load_weights(model, built.files)
            if loaded is not None:
                return loaded, dev, precision
        load_model(model, str(built.files.model), device=str(dev))
        return model, dev, precision


BACKENDS.add("torch", TorchBackend())


def _graph(files: RunFiles, converters: list[ModelConverter]) -> Path:
    """The ONNX graph of the run: the last converter's that names one, else the export's."""
    named = [c.graph for c in converters if c.graph]
    return files.root / named[-1] if named else files.onnx


class OnnxBackend(Backend):
    name, runtime = "onnx", "onnxruntime"

    def check(self, files: RunFiles, converters: list[ModelConverter]) -> None:
        graph = _graph(files, converters)
        if not graph.is_file():
            raise ConfigError(
                f"backend 'onnx' needs {graph}; write it with `hone export {files.root} "
                "--format onnx`, or pass --backend torch"
            )

    def load(self, built: BuiltModel, device: str) -> tuple[nn.Module, torch.device, str]:
        self.check(built.files, built.converters)
        dev = _on_cpu(device, built.files, "runs through ONNX Runtime (backend 'onnx')")
        graph = _graph(built.files, built.converters)
        return OnnxModule(graph, built.context_length or None), dev, "fp32"


BACKENDS.add("onnx", OnnxBackend())


class AutoBackend(Backend):
    name = "auto"

    def choose(self, converters: list[ModelConverter]) -> Backend:
        # A model that exists only as a graph (int8 through ONNX Runtime) runs there.
        return BACKENDS.get("onnx" if any(c.graph for c in converters) else "torch")

    def check(self, files: RunFiles, converters: list[ModelConverter]) -> None:
        self.choose(converters).check(files, converters)

    def load(self, built: BuiltModel, device: str) -> tuple[nn.Module, torch.device, str]:
        return self.choose(built.converters).load(built, device)


BACKENDS.add("auto", AutoBackend())


class OnnxModule(nn.Module):
    """An ONNX Runtime session behind nn.Module's interface: tensors in, a tensor out.

    The session runs on the CPU with as many threads as torch uses (`torch.get_num_threads()`
    when it is built), so the two runtimes are compared on equal terms.
    """

    def __init__(self, path: str | Path, block_size: int | None = None) -> None:
        super().__init__()
        import onnxruntime  # type: ignore[import-untyped]

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        if block_size is not None:  # what hone.models.generate crops a language model's context to
            self.block_size = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(None, {self.input_name: x.detach().cpu().numpy()})
        return torch.from_numpy(out)

    def parameter_counts(self) -> tuple[int, int]:
        """(parameters, nonzero parameters): the elements of the graph's weight tensors (a
        quantized weight's scales and zero points are not counted)."""
        import numpy as np
        import onnx
        from onnx import numpy_helper

        initializers = {
            t.name: numpy_helper.to_array(t) for t in onnx.load(str(self.path)).graph.initializer
        }
        total = nonzero = 0
        for name, array in initializers.items():
            # Float and 8-bit weights; int64 shapes, scalar constants and scales are not.
            weight = array.dtype.kind == "f" or (array.dtype.kind in "iu" and array.itemsize == 1)
            if not weight or array.size <= 1 or name.endswith(_QUANT_BOOKKEEPING):
                continue
            total += array.size
            # A uint8 table has one zero point: the value that stands for 0.
            zero = initializers.get(name.removesuffix("_quantized") + "_zero_point")
            shared = zero is not None and zero.size == 1
            nonzero += int(np.count_nonzero(array != zero if shared else array))
        return total, nonzero


def load_on_meta(
    cfg: Config, spec: ModelSpec, files: RunFiles, device: str, read_only: bool
) -> tuple[nn.Module, torch.device, str] | None:
    """(model, device, precision) of a run without converters, its model built on the meta
    device (no memory, no random initialization) and handed the weights file's tensors as
    they are: loading costs the weights' bytes once, not a random model's and a copy. The
    weights keep the file's dtype (a bf16 checkpoint's view stays bf16). A `read_only` file
    (a checkpoint's view, written once) is memory-mapped. None for a model whose buffers no
    file holds and that cannot recompute them (`reset_buffers`): it loads the usual way."""
    from hone.pretrained.weights import assign_weights, read_safetensors

    with torch.device("meta"):
        model = build_model(cfg.model, spec)
    if not hasattr(model, "reset_buffers"):
        return None
    dev = resolve_device(device)
    state = read_safetensors(files.model, dev, mapped=read_only)
    unexpected = set(state) - set(model.state_dict())
    assert not unexpected, sorted(unexpected)
    assign_weights(model, state)  # asserts that every tensor got one
    return model, dev, cfg.train.precision
