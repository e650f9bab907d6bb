"""LoRA adapters in PEFT's format: hone writes what `peft.PeftModel.from_pretrained` loads,
and loads what PEFT's `save_pretrained` writes.

A PEFT adapter folder holds adapter_config.json (peft_type "LORA", r, lora_alpha,
lora_dropout, target_modules, base_model_name_or_path, ...) and adapter_model.safetensors,
whose tensors are named after the Hugging Face model wrapped twice (PeftModel.base_model is
a LoraModel, whose .model is the transformers model):

    base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight   (r, in)
    base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight   (out, r)

hone's names for the same tensors are `blocks.0.attn.q.lora_a.weight` and `...lora_b.weight`;
the modules map through hone.pretrained.weights.NAME_MAPS. The Llama family (Llama, Mistral,
Qwen2, Qwen3: separate q/k/v) is supported; GPT-2's fused Conv1D layers are not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hone.errors import ConfigError
from hone.finetune.lora import LoRA, linear_layers, lora_layers
from hone.models.llama import Llama
from hone.pretrained.weights import NAME_MAPS, NameMap

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."  # PeftModel -> LoraModel -> the transformers model
# hone's adapter parameter -> PEFT's, inside a targeted module
_PARAMS = {"lora_a.weight": "lora_A.weight", "lora_b.weight": "lora_B.weight"}
# PEFT options hone's LoRA has no counterpart for, and the value that means "not used":
# written as such (options PEFT has had since its early versions) ...
_WRITTEN_UNUSED: dict[str, Any] = {
    "use_dora": False,
    "use_rslora": False,
    "fan_in_fan_out": False,
    "bias": "none",
    "rank_pattern": {},
    "alpha_pattern": {},
    "modules_to_save": None,
}
# ... and refused when an adapter read uses them
_UNSUPPORTED: dict[str, Any] = {
    **_WRITTEN_UNUSED,
    "lora_bias": False,
    "layers_to_transform": None,
    "layer_replication": None,
    "target_parameters": None,
    "trainable_token_indices": None,
    "alora_invocation_tokens": None,
    "use_qalora": False,
}
# Initializations that leave the base weights as they are: others (pissa, olora, corda,
# loftq) change them, and the adapter then fits a base model hone does not have.
_PLAIN_INITS = (True, False, "gaussian")


def _name_map(model: nn.Module) -> NameMap:
    if not isinstance(model, Llama):
        raise ConfigError(
            f"PEFT adapters are read and written for the Llama family (Llama, Mistral, Qwen2, "
            f"Qwen3), got a {type(model).__name__}"
        )
    return NAME_MAPS["llama"]


def _hf_module(names: NameMap, module: str) -> str:
    """The Hugging Face name of hone's linear layer `module` (blocks.0.attn.q ->
    model.layers.0.self_attn.q_proj)."""
    return names.to_hf(f"{module}.weight").removesuffix(".weight")


def _hone_module(names: NameMap, hf_module: str) -> str | None:
    hone_name = names.to_hone(f"{hf_module}.weight")
    return hone_name.removesuffix(".weight") if hone_name is not None else None


def _target_modules(names: NameMap, layers: list[str], model: nn.Module) -> list[str]:
    """PEFT's target_modules for adapters on `layers`: the HF leaf names (q_proj) when every
    block has them on the same layers, else the layers' full HF names."""
    hf = {name: _hf_module(names, name) for name in layers}
    leaves = sorted({hf_name.rsplit(".", 1)[-1] for hf_name in hf.values()})
    in_blocks = [name for name in linear_layers(model) if name.startswith("blocks.")]
    covered = {n for n in in_blocks if _hf_module(names, n).rsplit(".", 1)[-1] in leaves}
    return leaves if covered == set(layers) else sorted(hf.values())


def save_peft_adapter(
    model: nn.Module, folder: str | Path, base_model: str = "", revision: str | None = None
) -> list[Path]:
    """Write the LoRA adapters of `model` (converted by `LoRA`) into `folder` as PEFT does:
    adapter_config.json and adapter_model.safetensors (fp32). `base_model`: the checkpoint
    they adapt (a Hub id or folder), PEFT's base_model_name_or_path; `revision`: the Hub
    revision of it. Returns the files."""
    names = _name_map(model)
    layers = lora_layers(model)
    if not layers:
        raise ConfigError("the model has no LoRA adapters to save; train with --lora.enabled=true")
    first = next(iter(layers.values()))
    assert all((m.rank, m.alpha) == (first.rank, first.alpha) for m in layers.values())
    assert not any(m.merged for m in layers.values()), "save adapters unmerged (unmerge_adapters)"
    tensors = {}
    for name, layer in layers.items():
        hf_module = _hf_module(names, name)
        for ours, theirs in _PARAMS.items():
            weight = layer.get_parameter(ours).detach()
            tensors[f"{PREFIX}{hf_module}.{theirs}"] = weight.to("cpu", torch.float32).contiguous()
    dropout = first.dropout.p if isinstance(first.dropout, nn.Dropout) else 0.0
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model or None,
        "revision": revision,
        "r": first.rank,
        "lora_alpha": int(first.alpha) if float(first.alpha).is_integer() else first.alpha,
        "lora_dropout": dropout,
        "target_modules": _target_modules(names, list(layers), model),
        "init_lora_weights": True,
        "inference_mode": True,
        **_WRITTEN_UNUSED,
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return [folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS]


def read_peft_config(folder: str | Path) -> dict[str, Any]:
    """adapter_config.json of a PEFT LoRA adapter; options hone's LoRA lacks are refused in
    one line."""
    folder = Path(folder)
    path = folder / ADAPTER_CONFIG
    if not path.is_file():
        raise ConfigError(f"{folder} has no {ADAPTER_CONFIG}; give the folder of a PEFT adapter")
    config = dict(json.loads(path.read_text()))
    if config.get("peft_type") != "LORA":
        raise ConfigError(f"{path}: peft_type must be LORA, got {config.get('peft_type')!r}")
    for key, unused in _UNSUPPORTED.items():
        if config.get(key, unused) not in (unused, None, {}, []):
            raise ConfigError(
                f"{path}: {key} = {config[key]!r} is a PEFT option hone's LoRA does not have "
                f"(it reads adapters with {key} = {unused!r})"
            )
    if config.get("init_lora_weights", True) not in _PLAIN_INITS:
        raise ConfigError(
            f"{path}: init_lora_weights = {config['init_lora_weights']!r} changed the base "
            "weights too; hone reads adapters of the unchanged base (init_lora_weights = true)"
        )
    return config


def load_peft_adapter(model: nn.Module, folder: str | Path) -> LoRA:
    """Convert `model` (a hone model of the adapter's base checkpoint) with the LoRA adapter
    PEFT saved in `folder`, its weights loaded. Returns the converter, whose record
    re-applies the adapters' layout (hone.models.converters)."""
    folder = Path(folder)
    config = read_peft_config(folder)
    names = _name_map(model)
    if lora_layers(model):
        raise ConfigError("the model has LoRA adapters already; load a PEFT adapter into its base")
    weights_path = folder / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        raise ConfigError(
            f"{folder} has no {ADAPTER_WEIGHTS} (hone never unpickles adapter_model.bin); "
            "save the adapter with safe_serialization=True"
        )
    state: dict[str, torch.Tensor] = {}  # hone name -> tensor
    for key, tensor in load_file(str(weights_path)).items():
        hf_module, _, rest = key.removeprefix(PREFIX).partition(".lora_")
        ours = next((o for o, t in _PARAMS.items() if t == f"lora_{rest}"), None)
        module = _hone_module(names, hf_module)
        if ours is None or module is None:
            raise ConfigError(
                f"{weights_path}: {key!r} is no LoRA weight of a {type(model).__name__}"
            )
        state[f"{module}.{ours}"] = tensor
    modules = sorted({name.rsplit(".", 2)[0] for name in state})
    converter = LoRA(
        int(config["r"]), float(config["lora_alpha"]), float(config.get("lora_dropout", 0.0)),
        _targets(modules, model),
    )  # fmt: skip
    converter.convert(model)
    layers = lora_layers(model)
    assert sorted(layers) == modules, (sorted(layers), modules)
    with torch.no_grad():
        for name, tensor in state.items():
            param = model.get_parameter(name)
            if param.shape != tensor.shape:
                raise ConfigError(
                    f"{weights_path}: {name} has shape {tuple(tensor.shape)}, the model's "
                    f"{tuple(param.shape)} (rank {config['r']}): an adapter of another model?"
                )
            param.copy_(tensor)
    return converter


def _targets(modules: list[str], model: nn.Module) -> list[str]:
    """LoRA targets for adapters on exactly `modules`: the within-block suffixes (attn.q)
    when they cover the same layers, else the full module names."""
    suffixes = sorted({name.split(".", 2)[2] for name in modules if name.startswith("blocks.")})
    covered = [
        n for n in linear_layers(model) if any(n == s or n.endswith("." + s) for s in suffixes)
    ]
    return suffixes if sorted(covered) == modules else modules
