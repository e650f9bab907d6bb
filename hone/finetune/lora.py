"""LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

A targeted linear layer y = x W^T + b becomes y = x W^T + b + scale * B A dropout(x), with W
(out x in) and b frozen, A (r x in) and B (out x r) trained, scale = alpha / r. B starts at
zero, so the converted model computes what the base did; A starts as nn.Linear's weight does
(kaiming-uniform, a = sqrt(5)), as in the paper's code and PEFT's, whose files hone reads and
writes (hone.finetune.peft_format).

`LoRA` is a model converter (hone.models.converters): the trainer applies it when the config
says `[lora] enabled = true` (hone.finetune.settings), the run records it in converters.json,
and loading the run re-applies it before the run's weights load. It freezes every parameter
of the model before adding the adapters, so the optimizer, which takes the parameters that
require gradients (hone.optim.base), holds the adapters only, and so does its state.

On a pretrained checkpoint (`[model] name = "pretrained"`) the converter records a
reference to that base (hone.finetune.frozen_base: its path and the sha256 of its files), and
the run's checkpoints and model.safetensors hold the adapters alone (hone.checkpoint.io's
`save_weights`): loading the run rebuilds the base from its config, checks it against the
reference, and loads the adapters on top (`load_weights`). On any other model (built from
seeded random weights) they hold every weight, as a full run's do. `save_peft_adapter`
(hone.finetune.peft_format) writes the adapters in PEFT's format.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from hone.errors import ConfigError
from hone.finetune.lora_product import with_update
from hone.finetune.nf4 import NF4Weight, require_bitsandbytes
from hone.finetune.settings import BASE_DTYPES, PRESETS, base_dtype_for, target_suffixes
from hone.models.converters import CONVERTERS, ModelConverter
from hone.models.recompute import recomputed
from hone.pretrained.weights import release_mapped_pages

if TYPE_CHECKING:
    from hone.config import Config
    from hone.finetune.settings import LoRAConfig
    from hone.run_files import RunFiles

# [lora] base_dtype -> the dtype the frozen base weights are held in (None: as built); "auto"
# (`base_dtype_for`) is bf16 under bf16 autocast, whose cast it is anyway, fp32 otherwise. bf16
# halves their memory at a cast to the input's dtype each forward (0.86x the tokens/s of an fp32
# base in fp32 on an AVX2 EPYC, bench/lora.py peft). nf4: QLoRA's 4 bits (hone.finetune.nf4),
# dequantized each forward and in backward; a pretrained base only (where the weights come from).
_BASE_DTYPES: dict[str, torch.dtype | str | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "nf4": "nf4",
}
assert set(_BASE_DTYPES) | {"auto"} == set(BASE_DTYPES)


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update: x (..., in) -> (..., out).

    The base's parameters keep nn.Linear's names (`weight`, `bias`: a converted model's
    state dict holds them where the base model's does) and the adapters are `lora_a`
    (in -> r) and `lora_b` (r -> out), in fp32 whatever the base's dtype, as PEFT keeps
    them: an optimizer step on bf16 adapters would round away most of a small update.

    With `base_dtype="nf4"` the weight is held in 4 bits instead (`nf4`, an NF4Weight;
    `weight` is then None, or the merged weight while merged): `base_weight()` reads it."""

    def __init__(
        self,
        linear: nn.Linear,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        base_dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        self.merged = False  # the update is in `weight` (merge); the adapters then sit idle
        # The base's own Parameter objects: a weight tied to another module stays tied.
        self.weight: nn.Parameter | None = cast(nn.Parameter, linear.weight.requires_grad_(False))
        self.bias = linear.bias.requires_grad_(False) if linear.bias is not None else None
        device = linear.weight.device
        self.nf4: NF4Weight | None = None
        if base_dtype == "nf4":
            self.nf4 = NF4Weight(linear.weight)
            self.weight = None
        elif isinstance(base_dtype, torch.dtype):
            for param in (self.weight, self.bias):
                if param is not None:
                    param.data = param.data.to(base_dtype)
        self.lora_a = nn.Linear(self.in_features, rank, bias=False, device=device)
        self.lora_b = nn.Linear(rank, self.out_features, bias=False, device=device)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_adapters()

    @torch.no_grad()
    def reset_adapters(self) -> None:
        """A as nn.Linear initializes its weight (and PEFT its lora_A), B zero: no change yet."""
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)

    takes_product = True  # forward takes the frozen weight's product (a lean decode step's)

    def frozen_numel(self) -> int:
        """The 4-bit frozen weight, not a parameter, for hone.models.base.weight_flops."""
        return self.in_features * self.out_features if self.nf4 is not None else 0

    def forward(
        self, x: torch.Tensor, product: Callable[..., torch.Tensor] = F.linear
    ) -> torch.Tensor:
        autocast = torch.is_autocast_enabled(x.device.type)
        if autocast:
            # x cast once for the base's matmul and the adapter's (autocast casts it for each,
            # and each keeps its copy), and the base weight cast straight to autocast's dtype:
            # cast to x's (fp32) first, a bf16 base became an fp32 copy, then a bf16 one again.
            x = x.to(torch.get_autocast_dtype(x.device.type))
        # The base computes in the input's dtype (a no-op cast when they agree).
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        summed = (  # training in fp32 without dropout
            torch.is_grad_enabled() and not self.merged and product is F.linear
            and x.dtype == self.lora_a.weight.dtype == torch.float32
            and (isinstance(self.dropout, nn.Identity) or not self.training)
            and (self.nf4 is not None or self.base_weight().dtype == torch.float32)
            and not any(p.requires_grad for p in (self.weight, self.bias) if p is not None)
        )  # fmt: skip
        if summed:  # the update inside the weight's matmuls (hone.finetune.lora_product)
            a, b = self.lora_a.weight, self.lora_b.weight
            product = partial(with_update, a=a, b=b, scale=self.scale)
        if self.nf4 is not None and not self.merged:
            # The 4-bit weight dequantized for this matmul, and again for backward's (the
            # input's gradient): kept, the dequantized weights of every layer would stay
            # until backward, more than an fp32 base holds.
            dequantized = partial(self.nf4.dequantized, x.dtype)
            weight = dequantized()
            with recomputed(weight, dequantized):
                y = (product if summed else F.linear)(x, weight, bias)  # (..., out)
            del weight
        else:
            y = product(x, self.base_weight().to(x.dtype), bias)  # (..., out)
        if self.merged or summed:
            return y
        if not autocast:  # a bf16 input of a bf16 model: the adapters compute in fp32
            x = x.to(self.lora_a.weight.dtype)
        h = self.lora_a(self.dropout(x))  # (..., r)
        if h.dtype != y.dtype:  # a bf16 model outside autocast: the update in fp32, rounded once
            return y + (self.lora_b(h) * self.scale).to(y.dtype)
        # y + scale * h B^T in one addmm: the update is added inside the matmul, without the
        # (..., out) product and scaled copy that a separate multiply and add would make.
        out = torch.addmm(
            y.reshape(-1, self.out_features),
            h.reshape(-1, self.rank),
            self.lora_b.weight.t(),
            alpha=self.scale,
        )
        return out.view(y.shape)

    @torch.no_grad()
    def dequantize_base(self) -> None:
        """Hold a 4-bit frozen weight dense instead (the dtype it was quantized from), for
        what knows no NF4 (an ONNX graph): the same outputs, to the bit."""
        if self.nf4 is None:
            return
        if not self.merged:  # merged, `weight` is dense already
            self.weight = nn.Parameter(self.nf4.dequantized(), requires_grad=False)
        self.nf4 = None

    def base_weight(self) -> torch.Tensor:
        """The frozen weight (out, in) as the layer holds it (merged: with the update);
        a 4-bit one dequantized."""
        if self.weight is None:
            assert self.nf4 is not None
            return self.nf4.dequantized()
        return self.weight

    def delta(self) -> torch.Tensor:
        """The update the adapters add to the weight: scale * B A, (out, in) in fp32."""
        return (self.lora_b.weight @ self.lora_a.weight) * self.scale

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into the base weight: one matmul per forward instead of three, the
        same outputs (to rounding; a bf16 base rounds the sum to bf16). Training and saving
        want the unmerged layer: the state dict would hold the update twice."""
        if self.merged:
            return
        if self.nf4 is not None:  # the 4 bits stay, for unmerge; the merged weight beside
            merged = self.nf4.dequantized(torch.float32) + self.delta()
            self.weight = nn.Parameter(merged.to(self.nf4.dtype), requires_grad=False)
        else:
            assert self.weight is not None
            self.weight.add_(self.delta().to(self.weight.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update back out of the base weight (exact to fp32 rounding)."""
        if not self.merged:
            return
        if self.nf4 is not None:  # exact: the 4 bits were never touched
            self.weight = None
        else:
            assert self.weight is not None
            self.weight.sub_(self.delta().to(self.weight.dtype))
        self.merged = False

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"rank={self.rank}, alpha={self.alpha:g}, "
            f"base_dtype={'nf4' if self.nf4 is not None else self.base_weight().dtype}"
        )


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's LoRA layers by module name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_adapters(model: nn.Module) -> nn.Module:
    """Merge every LoRA layer's update into its base weight (for inference); returns model."""
    for layer in lora_layers(model).values():
        layer.merge()
    return model


def unmerge_adapters(model: nn.Module) -> nn.Module:
    """Undo `merge_adapters`; returns model."""
    for layer in lora_layers(model).values():
        layer.unmerge()
    return model


def dequantize_bases(model: nn.Module) -> nn.Module:
    """Every LoRA layer's 4-bit frozen weight held dense (`LoRALinear.dequantize_base`);
    returns model."""
    for layer in lora_layers(model).values():
        layer.dequantize_base()
    return model


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The adapters' parameters by name: what a LoRA run trains."""
    return {
        f"{name}.{param_name}": param
        for name, layer in lora_layers(model).items()
        for param_name, param in layer.named_parameters()
        if param_name.startswith("lora_")
    }


def linear_layers(model: nn.Module) -> list[str]:
    """The names of the model's linear layers, LoRA ones included (not their adapters)."""
    lora = lora_layers(model)
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear | LoRALinear) and name.rpartition(".")[0] not in lora
    ]


def _matches(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def _linear_suffixes(model: nn.Module) -> list[str]:
    """What the model's linear layers' names end in (their last two parts), for errors."""
    return sorted({".".join(n.split(".")[-2:]) for n in linear_layers(model)})


class LoRA(ModelConverter):
    """Freeze the model and add LoRA adapters to the linear layers whose names end in one of
    `targets` (a preset of hone.finetune.settings.PRESETS, comma-separated suffixes, or a
    list of suffixes); each preset or suffix must match at least one linear layer.
    `frozen_base`: the reference to the pretrained checkpoint the frozen weights are
    (hone.finetune.frozen_base), when the run saves its adapters alone.

    Converting a model whose targets are LoRA layers already leaves those as they are (a
    loaded LoRA run handed to the trainer again keeps its adapters)."""

    name = "lora"

    def __init__(
        self,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        targets: str | list[str] = "attention",
        base_dtype: str = "fp32",
        frozen_base: dict[str, Any] | None = None,
    ) -> None:
        if rank < 1:
            raise ConfigError(f"lora.rank must be at least 1, got {rank}; set --lora.rank=8")
        if base_dtype not in _BASE_DTYPES:  # "auto" is resolved by base_dtype_for first
            raise ConfigError(
                f"lora.base_dtype must be one of {', '.join(_BASE_DTYPES)}, got {base_dtype!r}; "
                "set --lora.base_dtype=fp32"
            )
        if base_dtype == "nf4":
            require_bitsandbytes()
            if frozen_base is None:
                raise ConfigError(
                    "lora.base_dtype = nf4 holds a pretrained checkpoint's frozen weights in 4 "
                    "bits (the run saves the adapters alone): set model.name = pretrained, or "
                    "--lora.base_dtype=bf16"
                )
        self.rank, self.alpha, self.dropout, self.base_dtype = rank, alpha, dropout, base_dtype
        self.frozen_base = frozen_base
        # Each item the user named, with the suffixes it stands for (a preset: several).
        items = targets.split(",") if isinstance(targets, str) else list(targets)
        self.items = [(item.strip(), target_suffixes(item.strip())) for item in items]
        self.targets = target_suffixes(targets)  # narrowed to the matching ones by convert

    @classmethod
    def from_config(
        cls, cfg: LoRAConfig, precision: str, frozen_base: dict[str, Any] | None = None
    ) -> LoRA:
        """The converter `[lora]` describes, for a run computing in `precision`."""
        base_dtype = base_dtype_for(cfg.base_dtype, precision)
        return cls(cfg.rank, cfg.alpha, cfg.dropout, cfg.targets, base_dtype, frozen_base)

    def _modules(self, model: nn.Module) -> list[str]:
        """The names of the linear layers the targets match; one line for an item that
        matches none."""
        layers = linear_layers(model)
        for item, suffixes in self.items:
            if not any(_matches(name, s) for name in layers for s in suffixes):
                kind = "preset" if item in PRESETS else "suffix"
                raise ConfigError(
                    f"lora.targets: the {kind} {item!r} matches no linear layer of this "
                    f"{type(model).__name__}, whose linear layers end in "
                    f"{', '.join(_linear_suffixes(model))}; set --lora.targets to some of those"
                )
        self.targets = [s for s in self.targets if any(_matches(n, s) for n in layers)]
        return [name for name in layers if any(_matches(name, s) for s in self.targets)]

    def convert(self, model: nn.Module) -> nn.Module:
        modules = self._modules(model)
        model.requires_grad_(False)
        base_dtype = _BASE_DTYPES[self.base_dtype]
        for name in modules:
            linear = model.get_submodule(name)
            if isinstance(linear, LoRALinear):
                linear.lora_a.requires_grad_(True)
                linear.lora_b.requires_grad_(True)
                continue
            assert isinstance(linear, nn.Linear)
            cast_from = [t.data for t in (linear.weight, linear.bias) if t is not None]
            layer = LoRALinear(linear, self.rank, self.alpha, self.dropout, base_dtype)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
            if base_dtype is not None and cast_from[0].dtype != base_dtype:
                # A checkpoint's mapping stays open while any of its tensors lives (the
                # embedding): the pages of the weights cast away would count in RSS until
                # the run ends. Layer by layer, so that the file is not all in RSS at once.
                release_mapped_pages(cast_from)
        return model

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "targets": self.targets,
            "base_dtype": self.base_dtype,
            **({"frozen_base": self.frozen_base} if self.frozen_base is not None else {}),
        }

    def load_weights(self, model: nn.Module, files: RunFiles) -> nn.Module | None:
        """The run's adapters on the base the model was built with, checked to be the one
        they were trained on; None (the run's full weights load) for a model saved whole."""
        from hone.checkpoint import load_weights, saved_frozen_base
        from hone.finetune.frozen_base import base_reference

        if self.frozen_base is None or saved_frozen_base(files.model) is None:
            return None
        load_weights(model, files.model, base_reference(self.frozen_base["path"]))
        return model


CONVERTERS.add("lora", LoRA)


def with_config_adapters(
    cfg: Config, converters: Iterable[ModelConverter], precision: str
) -> list[ModelConverter]:
    """`converters`, and after them LoRA when the config's `[lora] enabled` and none of
    them is LoRA already (hone compress hands a loaded LoRA run's own, record-only), for a
    run computing in `precision` (train.precision resolved)."""
    converters = list(converters)
    if cfg.lora.enabled and not any(c.name == LoRA.name for c in converters):
        frozen_base = None
        if cfg.model.name == "pretrained":  # the base is a checkpoint: saved adapters alone
            from hone.finetune.frozen_base import base_reference

            frozen_base = base_reference(cfg.model.path)
        converters.append(LoRA.from_config(cfg.lora, precision, frozen_base))
    return converters
