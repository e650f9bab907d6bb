"""Int8 models a compressed run may hold, as modules that LoadedRun runs like any other.

`hone compress --quantize int8` keeps the fp32 weights (hone.run_files.MODEL) and adds one
int8 model beside them; a run holding one is run by it, on the CPU:

- MODEL_INT8_ONNX, an ONNX Runtime graph with int8 MatMuls (backend "onnxruntime"), run by
  `OnnxModule`;
- MODEL_INT8, torch's dynamic int8 linear layers (backend "torch"): per output channel, the
  int8 weights with their scales and zero points, and every other tensor in fp32, in
  safetensors (nothing pickled), rebuilt by `load_int8_linears`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from hone.run_files import RunFiles

# ONNX Runtime's dynamic quantization stores each weight as NAME_quantized (int8) with
# NAME_scale and NAME_zero_point: per-channel bookkeeping, not parameters.
_QUANT_BOOKKEEPING = ("_scale", "_zero_point")


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
    """The built fp32 architecture `model` quantized as `save_int8_linears` saved it."""
    from safetensors.torch import load_file

    model = quantize_linears(model)
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


def load_int8(files: RunFiles, model: nn.Module, block_size: int | None) -> nn.Module | None:
    """The run's int8 model, if `hone compress` wrote one; `model` is its built fp32
    architecture (converters applied, weights not loaded). None for an fp32 run."""
    if files.model_int8_onnx.is_file():
        return OnnxModule(files.model_int8_onnx, block_size)
    if files.model_int8.is_file():
        return load_int8_linears(model.cpu(), files.model_int8)
    return None
