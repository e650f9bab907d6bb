"""Model converters: transformations of a built model that change its architecture.

Compression (pruning, factorization, quantization) and other tools convert a model after it
is built. A converter records itself as JSON (`record()`); a run directory keeps the records
in order (hone.run_files.CONVERTERS), and loading a run builds the model from its config,
re-applies the records, and only then loads the weights, so the shapes match.

A converter handed to the trainer in record-only mode (`as_record_only()`) is one that has
already converted the model it comes with: it is recorded, its hooks run, the model is left
as it is. Optional hooks, which do nothing unless a converter overrides them:

    post_optimizer_step(model)      after each optimizer step while training (pruning keeps
                                    its zeros); the trainer's Stepper calls it only on the
                                    converters that override it, so most runs pay nothing
    load_weights(model, files)      a converted model that stores its weights its own way
                                    (int8) loads them; otherwise the run's safetensors load

and what a converted model needs to run (the inference backends read them,
hone.engine.backends): `cpu_only` (int8 kernels) and `graph` (a model that exists only as
an ONNX graph, which the onnx backend runs).

Built in: `LowRank` (truncated-SVD factorization of linear layers), `PrunedShapes` (the
widths structured pruning left, hone compress --prune --structured), `MagnitudePrune`
(unstructured pruning, hone compress --prune) and, in hone.engine.int8, `Int8` (hone
compress --quantize int8).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils import skip_init

from hone.errors import ConfigError
from hone.registry import Registry

if TYPE_CHECKING:
    from hone.run_files import RunFiles


class ModelConverter:
    """One transformation; subclasses register a builder taking the record's arguments."""

    name = ""
    record_only = False  # the model it comes with is converted already (`as_record_only`)
    cpu_only = False  # its converted model runs on the CPU, in fp32 (int8 kernels)
    graph = ""  # the run file of the ONNX graph that holds its converted model, if any

    def convert(self, model: nn.Module) -> nn.Module:
        """Transform `model` (in place or into a new module) and return the result."""
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """JSON-able {"name": ..., args}: enough to rebuild the same architecture."""
        raise NotImplementedError

    def as_record_only(self) -> ModelConverter:
        """This converter, for a model it has converted already: `convert_model` (and so the
        trainer) records it and runs its hooks, and leaves the model as it is."""
        self.record_only = True
        return self

    def post_optimizer_step(self, model: nn.Module) -> None:
        """Called after each optimizer step while training, when overridden."""

    def load_weights(self, model: nn.Module, files: RunFiles) -> nn.Module | None:
        """The converted `model` with the run's trained weights, for a converter whose output
        stores them its own way; None: they are the run's safetensors."""
        return None


CONVERTERS: Registry[Callable[..., ModelConverter]] = Registry("model converter", "converters")


def converter_from_record(record: dict[str, Any]) -> ModelConverter:
    args = {k: v for k, v in record.items() if k != "name"}
    return CONVERTERS.get(record["name"])(**args)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a run's converters.json (hone.run_files.CONVERTERS); [] without one."""
    return list(json.loads(path.read_text())["converters"]) if path.is_file() else []


def write_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write a run's converters.json."""
    path.write_text(json.dumps({"converters": list(records)}, indent=2) + "\n")


def apply_converters(model: nn.Module, records: Iterable[dict[str, Any]]) -> nn.Module:
    """Re-apply recorded conversions, in order, to a freshly built model."""
    for record in records:
        model = converter_from_record(record).convert(model)
    return model


def convert_model(
    model: nn.Module, converters: Iterable[ModelConverter]
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """`model` through `converters` in order (one in record-only mode leaves it as it is),
    and the records of them all, in order."""
    records = []
    for converter in converters:
        if not converter.record_only:
            model = converter.convert(model)
        records.append(converter.record())
    return model, records


def post_optimizer_steps(
    converters: Iterable[ModelConverter],
) -> list[Callable[[nn.Module], None]]:
    """The `post_optimizer_step` hooks of the converters that override it: usually none."""
    base = ModelConverter.post_optimizer_step
    return [c.post_optimizer_step for c in converters if type(c).post_optimizer_step is not base]


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


class LowRank(ModelConverter):
    """Factorize linear layers W (out x in) into B (out x r) @ A (r x in), from W's truncated
    SVD: fewer parameters and FLOPs when r < in * out / (in + out)."""

    name = "low_rank"

    def __init__(self, rank: int, modules: list[str] | None = None) -> None:
        if rank < 1:
            raise ConfigError(f"low_rank needs rank >= 1, got {rank}")
        self.rank, self.modules = rank, list(modules) if modules is not None else None

    def _targets(self, model: nn.Module) -> list[str]:
        if self.modules is not None:
            for name in self.modules:
                if not isinstance(model.get_submodule(name), nn.Linear):
                    raise ConfigError(f"low_rank: {name!r} is not an nn.Linear in this model")
            return self.modules
        # Every linear layer that the rank actually shrinks.
        return [
            name
            for name, m in model.named_modules()
            if isinstance(m, nn.Linear)
            and self.rank * (m.in_features + m.out_features) < m.in_features * m.out_features
        ]

    @torch.no_grad()
    def convert(self, model: nn.Module) -> nn.Module:
        self.modules = self._targets(model)
        for name in self.modules:
            linear = model.get_submodule(name)
            assert isinstance(linear, nn.Linear)
            rank = min(self.rank, linear.in_features, linear.out_features)
            # skip_init: the weights are set below, and drawing them would move the global RNG.
            first = skip_init(nn.Linear, linear.in_features, rank, bias=False)
            second = skip_init(nn.Linear, rank, linear.out_features, bias=linear.bias is not None)
            u, s, vh = torch.linalg.svd(linear.weight.float(), full_matrices=False)
            root = s[:rank].sqrt()
            first.weight.copy_(root[:, None] * vh[:rank])  # (r, in)
            second.weight.copy_(u[:, :rank] * root)  # (out, r)
            if linear.bias is not None:
                second.bias.copy_(linear.bias)
            factored = nn.Sequential(first, second).to(linear.weight.device)
            _replace(model, name, factored)
        return model

    def record(self) -> dict[str, Any]:
        assert self.modules is not None, "record() after convert()"
        return {"name": self.name, "rank": self.rank, "modules": self.modules}


CONVERTERS.add("low_rank", LowRank)


def size_attributes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Every module's integer sizes (`in_features`, `out_channels`, `normalized_shape`, an
    attention's `n_head`, ...) by module name: what `PrunedShapes` compares."""
    sizes: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        own = {
            key: value
            for key, value in vars(module).items()
            if (type(value) is int)
            or (isinstance(value, tuple) and value and all(type(v) is int for v in value))
        }
        if own:
            sizes[name] = own
    return sizes


def tensor_shapes(model: nn.Module) -> dict[str, list[int]]:
    """The shape of every parameter and buffer, by name (a tied weight once)."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return {name: list(tensor.shape) for name, tensor in tensors}


class PrunedShapes(ModelConverter):
    """The shapes structured pruning left: every tensor whose shape, and every module size
    attribute whose value, differs from the freshly built model's. Converting resizes those
    tensors (their values are the loaded weights') and sets those attributes, so loading a
    pruned run needs no pruning library; tensors already of the recorded shape are kept."""

    name = "structured_prune"

    def __init__(
        self,
        ratio: float,
        shapes: dict[str, list[int]],
        attributes: dict[str, dict[str, Any]],
    ) -> None:
        self.ratio, self.shapes, self.attributes = ratio, shapes, attributes

    @classmethod
    def between(
        cls,
        ratio: float,
        shapes: dict[str, list[int]],
        attributes: dict[str, dict[str, Any]],
        pruned: nn.Module,
    ) -> PrunedShapes:
        """The record of what changed from a model of `shapes` and `attributes` (taken with
        `tensor_shapes` and `size_attributes` before pruning) to `pruned`."""
        changed_shapes = {
            name: shape for name, shape in tensor_shapes(pruned).items() if shapes[name] != shape
        }
        changed_attributes = {}
        for name, sizes in size_attributes(pruned).items():
            changed = {k: v for k, v in sizes.items() if attributes.get(name, {}).get(k) != v}
            if changed:
                changed_attributes[name] = changed
        return cls(ratio, changed_shapes, changed_attributes)

    @torch.no_grad()
    def convert(self, model: nn.Module) -> nn.Module:
        for name, sizes in self.attributes.items():
            module = model.get_submodule(name)
            for key, value in sizes.items():
                setattr(module, key, tuple(value) if isinstance(value, list) else value)
        tensors = dict([*model.named_parameters(), *model.named_buffers()])
        for name, shape in self.shapes.items():
            tensor = tensors[name]
            if list(tensor.shape) != shape:
                # Uninitialized: the run's weights are loaded into it next.
                tensor.data = torch.empty(shape, dtype=tensor.dtype, device=tensor.device)
        return model

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ratio": self.ratio,
            "shapes": self.shapes,
            "attributes": self.attributes,
        }


CONVERTERS.add("structured_prune", PrunedShapes)


CHANNEL_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


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


class MagnitudePrune(ModelConverter):
    """Unstructured pruning: the `sparsity` share of smallest-magnitude weights over all
    linear and convolution layers together are zeroed (global L1, torch.nn.utils.prune; zeros
    already there count as smallest), the shapes kept.

    While training, `post_optimizer_step` puts the pruned weights back to zero: an optimizer
    moves a weight whose gradient is not its own (weight decay, momentum, Muon's
    orthogonalized update).
    """

    name = "unstructured_prune"

    def __init__(self, sparsity: float) -> None:
        if not 0 <= sparsity < 1:
            raise ConfigError(f"unstructured_prune needs 0 <= sparsity < 1, got {sparsity}")
        self.sparsity = sparsity
        self.masks: dict[str, torch.Tensor] = {}  # parameter name -> True where kept

    @torch.no_grad()
    def convert(self, model: nn.Module) -> nn.Module:
        from torch.nn.utils import prune

        targets = prunable_weights(model)
        total = sum(getattr(m, name).numel() for m, name in targets)
        prune.global_unstructured(
            targets, pruning_method=prune.L1Unstructured, amount=round(self.sparsity * total)
        )
        for module, name in targets:
            prune.remove(module, name)  # the mask is applied to the tensor itself, and dropped
        pruned = {id(getattr(m, name)) for m, name in targets}
        self.masks = {n: p != 0 for n, p in model.named_parameters() if id(p) in pruned}
        return model

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "sparsity": self.sparsity}

    @torch.no_grad()
    def post_optimizer_step(self, model: nn.Module) -> None:
        for name, mask in self.masks.items():
            weight = model.get_parameter(name)
            if mask.device != weight.device:  # the trainer moved the model after converting
                mask = self.masks[name] = mask.to(weight.device)
            weight.mul_(mask)


CONVERTERS.add("unstructured_prune", MagnitudePrune)
