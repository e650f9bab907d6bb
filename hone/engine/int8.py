"""Int8 models a compressed run may hold: the `Int8` converter, which loading re-applies.

`hone compress --quantize int8` keeps the fp32 weights (hone.run_files.MODEL), adds one
int8 model beside them and records an `Int8` converter; a run holding one runs it on the CPU:

- MODEL_INT8_ONNX (runtime "onnxruntime"), an ONNX Runtime graph with int8 MatMuls, run by
  the "onnx" backend (hone.engine.backends), which `backend="auto"` picks for it;
- MODEL_INT8 (runtime "torch"), torch's dynamic int8 linear layers: per output channel, the
  int8 weights with their scales and zero points, and every other tensor in fp32, in
  safetensors (nothing pickled), loaded by the converter (`Int8.load_weights`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hone.errors import ConfigError
from hone.models.converters import CONVERTERS, ModelConverter
from hone.run_files import MODEL_INT8, MODEL_INT8_ONNX, RunFiles

RUNTIMES = ("onnxruntime", "torch")


def _dynamic_linear() -> type[nn.Module]:
    from torch.ao.nn.quantized.dynamic import Linear

    return Linear


def quantize_linears(model: nn.Module) -> nn.Module:
    """`model` (fp32, CPU) with every nn.Linear replaced by torch's dynamic int8 linear:
    int8 weights per output channel, activations quantized on the fly at each call."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig})


def int8_linears(model: nn.Module) -> dict[str, nn.Module]:
    """The dynamic int8 linear layers of `model`, by name."""
    kind = _dynamic_linear()
    return {name: m for name, m in model.named_modules() if isinstance(m, kind)}


def _owned_by(key: str, modules: dict[str, nn.Module]) -> bool:
    return any(key.startswith(f"{name}.") for name in modules)


def save_int8_linears(model: nn.Module, path: Path) -> None:
    """Write a `quantize_linears` model to safetensors: int8 weights, their per-channel scales
    and zero points, and every other tensor as it is."""
    from safetensors.torch import save_file

    linears = int8_linears(model)
    tensors = {
        key: value
        for key, value in model.state_dict().items()
        if isinstance(value, torch.Tensor) and not _owned_by(key, linears)
    }
    for name, linear in linears.items():
        weight = linear.weight()  # type: ignore[operator]
        tensors[f"{name}.weight"] = weight.int_repr()  # (out, in) int8
        # torch keeps these as float64 and int64; its observer made them float32 and int8.
        tensors[f"{name}.weight_scale"] = weight.q_per_channel_scales().float()  # (out,)
        tensors[f"{name}.weight_zero_point"] = weight.q_per_channel_zero_points().to(torch.int8)
        bias = linear.bias()  # type: ignore[operator]
        if bias is not None:
            tensors[f"{name}.bias"] = bias
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


@torch.no_grad()
def load_int8_linears(model: nn.Module, path: Path) -> nn.Module:
    """`model` (`quantize_linears` of the built architecture) with the weights that
    `save_int8_linears` saved."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    linears = int8_linears(model)
    for name, linear in linears.items():
        weight = torch._make_per_channel_quantized_tensor(
            tensors.pop(f"{name}.weight"),
            tensors.pop(f"{name}.weight_scale").double(),
            tensors.pop(f"{name}.weight_zero_point").long(),
            0,
        )
        linear.set_weight_bias(weight, tensors.pop(f"{name}.bias", None))  # type: ignore[operator]
    # The other tensors one by one: load_state_dict would ask the int8 layers for keys of
    # their own packed format.
    expected = {k for k in model.state_dict() if not _owned_by(k, linears)}
    assert expected == set(tensors), expected ^ set(tensors)
    for key, value in tensors.items():
        owner, _, attr = key.rpartition(".")
        getattr(model.get_submodule(owner), attr).copy_(value)
    return model


class Int8(ModelConverter):
    """Dynamic int8 quantization of every nn.Linear (int8 weights, one scale per output
    channel; activations quantized at each call), run on the CPU. `runtime`: what holds the
    int8 model, torch's layers ("torch") or an ONNX Runtime graph ("onnxruntime")."""

    name = "int8"
    cpu_only = True

    def __init__(self, runtime: str = "torch") -> None:
        if runtime not in RUNTIMES:
            raise ConfigError(f"int8 runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self.runtime = runtime
        # Only the onnx backend runs the graph; the torch backend refuses it (load_weights).
        self.graph = MODEL_INT8_ONNX if runtime == "onnxruntime" else ""

    @property
    def file(self) -> str:
        """The run file that holds the int8 model."""
        return self.graph or MODEL_INT8

    def convert(self, model: nn.Module) -> nn.Module:
        return quantize_linears(model)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "runtime": self.runtime}

    def load_weights(self, model: nn.Module, files: RunFiles) -> nn.Module:
        if self.graph:
            raise ConfigError(
                f"{files.root} holds its int8 model as an ONNX Runtime graph ({self.graph}); "
                "load it with the onnx backend (--backend onnx, or auto)"
            )
        return load_int8_linears(model, files.model_int8)


CONVERTERS.add("int8", Int8)
