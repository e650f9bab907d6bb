"""`hone export RUN --format hf`: a run's language model as a Hugging Face checkpoint folder.

The folder is what `transformers.AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained` load: config.json, generation_config.json, the weights as
model.safetensors (or shards of at most `--max-shard-size` with their index), and the
tokenizer's files. The weights go out under the Hugging Face names of the architecture
(hone.pretrained.weights), in the dtype the run stored them in.

Which runs: one trained from a pretrained checkpoint (`model.name = "pretrained"`), a
checkpoint itself, and hone's own `llama` and GPT-2 shaped `gpt` runs (`HF_ARCHITECTURES`:
each model family names its Hugging Face architecture). A char or byte tokenizer has no
Hugging Face form: the model is written without one, and said so.

A LoRA run (hone.finetune.lora) is written with `merge=True` (`--merge`): each adapter's
update folded into its base weight (in fp32, rounded once to the base's dtype), the model
then of the base's architecture again. `export_peft` (`--format peft`) writes the adapters
alone, in PEFT's format, for `peft.PeftModel.from_pretrained` on the base checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils import skip_init

from hone.engine.backends import recorded_converters
from hone.engine.inference import LoadedRun, run_files
from hone.errors import ConfigError
from hone.finetune.lora import LoRA, LoRALinear, lora_layers
from hone.registry import Registry
from hone.run_files import staging_folder

if TYPE_CHECKING:
    from hone.models.gpt import GPTConfig
    from hone.models.llama import LlamaConfig

    Architecture = tuple[str, LlamaConfig | GPTConfig]

# Tokenizers with a Hugging Face form: a pretrained checkpoint's, hone's byte-level BPE.
HF_TOKENIZERS = ("pretrained", "bpe")
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}


@dataclass
class HFExport:
    """What `export_hf` wrote."""

    path: Path
    files: list[str] = field(default_factory=list)
    tokenizer: str = ""  # why no tokenizer was written, when none was


def parse_size(text: str) -> int:
    """Bytes of a size written as transformers writes it: 5GB, 500MB, 2GiB or a plain count."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?\s*", text.upper())
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(
            f"--max-shard-size must be a size such as 5GB, 500MB or a number of bytes, got {text!r}"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


def export_hf(
    run: str | Path, output: str | Path, max_shard_bytes: int, merge: bool = False
) -> HFExport:
    """Write the Hugging Face checkpoint of `run` (a run, bundle or checkpoint) to `output`;
    a LoRA run's adapters merged into the base weights when `merge` (refused without). An
    earlier export there is replaced; any other existing folder is refused."""
    from hone.pretrained.weights import save_pretrained_files

    converters = recorded_converters(run_files(run))
    lora = [c for c in converters if c.name == LoRA.name]
    others = [c for c in converters if c.name != LoRA.name]
    if others:  # pruned, quantized: no longer the architecture config.json describes
        raise ConfigError(
            f"{run} holds a model changed by {others[-1].name}, which Hugging Face's "
            "architectures cannot describe; export the run it was made from"
        )
    if lora and not merge:
        raise ConfigError(
            f"{run} trained LoRA adapters on a frozen base; pass --merge to fold them into the "
            "base weights, or write the adapters alone with --format peft"
        )
    if merge and not lora:
        raise ConfigError(f"--merge folds LoRA adapters into the base, and {run} has none; drop it")
    loaded = LoadedRun.load(run, "cpu", backend="torch")
    family, arch = _architecture(loaded)
    target = Path(output)
    if target.exists() and not _replaceable(target):
        raise ConfigError(
            f"--output {target} exists and is not a checkpoint hone exported; pass a new folder"
        )
    assert loaded.files is not None
    if lora:
        model = merged_model(loaded.model).eval()
    else:
        model = loaded.model.to(_stored_dtype(loaded.files.model)).eval()
    tokenizer = loaded.tokenizer
    kind = getattr(tokenizer, "kind", None)
    eos = list(getattr(tokenizer, "eos_ids", ()))
    result = HFExport(target)
    with staging_folder(target) as staging:
        folder = staging / target.name
        save_pretrained_files(
            model, family, arch, folder, max_shard_bytes,
            bos_token_id=getattr(tokenizer, "bos_id", None),
            eos_token_id=(eos[0] if len(eos) == 1 else eos) or None,
        )  # fmt: skip
        if tokenizer is not None and kind in HF_TOKENIZERS:
            tokenizer.save(str(folder))
            config = folder / "tokenizer_config.json"
            if not config.exists():  # hone's BPE: the plain tokenizer.json backend
                config.write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
        else:
            result.tokenizer = (
                f"no tokenizer written: hone's {kind} tokenizer has no Hugging Face form"
                if kind
                else "no tokenizer written: the run has none"
            )
        if target.exists():
            shutil.rmtree(target)
        os.replace(folder, target)
    result.files = sorted(p.name for p in target.iterdir())
    return result


@torch.no_grad()
def merged_model(model: nn.Module) -> nn.Module:
    """`model` with each LoRA layer replaced by a plain nn.Linear whose weight is the base's
    plus the adapters' update, computed in fp32 and rounded once, and every tensor in the
    base's dtype (that of the weights outside the LoRA layers: the checkpoint's, or
    model.dtype); the model is changed in place and returned."""
    layers = lora_layers(model)
    inside = {id(p) for layer in layers.values() for p in layer.parameters()}
    dtype = next(p.dtype for p in model.parameters() if id(p) not in inside)
    for name, layer in layers.items():
        linear = _merged_linear(layer, dtype)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, linear)
    return model.to(dtype)


def _merged_linear(layer: LoRALinear, dtype: torch.dtype) -> nn.Linear:
    weight = layer.base_weight().float()
    if not layer.merged:
        weight = weight + layer.delta()
    # skip_init: no random weights drawn (and the global RNG left alone), they are set below
    linear = skip_init(
        nn.Linear, layer.in_features, layer.out_features, bias=layer.bias is not None
    )
    linear.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    if layer.bias is not None:
        linear.bias = nn.Parameter(layer.bias.detach().to(dtype), requires_grad=False)
    return linear


# model.name -> (the run -> its hone family and architecture config, which
# hone.pretrained.architectures maps to a Hugging Face config)
HF_ARCHITECTURES: Registry[Callable[[LoadedRun], Architecture]] = Registry(
    "Hugging Face architecture", "model.name"
)


@HF_ARCHITECTURES.register("pretrained")
def _checkpoint_architecture(loaded: LoadedRun) -> Architecture:
    """The checkpoint's architecture, which the run kept."""
    from hone.pretrained.architectures import hone_arch
    from hone.pretrained.source import CONFIG_FILE, resolve_checkpoint

    folder = resolve_checkpoint(loaded.cfg.model.path)
    return hone_arch(json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")))


def _own_architecture(family: str) -> Callable[[LoadedRun], Architecture]:
    """hone's own model `family` (llama, GPT-2 shaped gpt): its arch config is the run's."""

    def architecture(loaded: LoadedRun) -> Architecture:
        return family, loaded.cfg.model.arch

    return architecture


HF_ARCHITECTURES.add("llama", _own_architecture("llama"))
HF_ARCHITECTURES.add("gpt", _own_architecture("gpt"))


def _architecture(loaded: LoadedRun) -> Architecture:
    """The hone family and architecture config of the run's model; a model without a
    Hugging Face architecture is refused in one line."""
    if not loaded.task.generates_text:
        raise ConfigError(
            f"--format hf writes language models, and this run is a {loaded.task.name} model; "
            "use --format onnx or safetensors"
        )
    name = loaded.cfg.model.name
    if name not in HF_ARCHITECTURES:
        raise ConfigError(
            f"model.name = {name!r} has no Hugging Face architecture; --format hf writes "
            f"{', '.join(HF_ARCHITECTURES.names())} runs"
        )
    return HF_ARCHITECTURES.get(name)(loaded)


def _stored_dtype(path: Path) -> torch.dtype:
    """The dtype of the first floating tensor in the safetensors file `path`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118  (safe_open is no dict)
            tensor = f.get_slice(key)
            dtype = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
            if tensor.get_dtype() in dtype:
                return dtype[tensor.get_dtype()]
    return torch.float32


def _replaceable(folder: Path) -> bool:
    """An empty folder, or a checkpoint written before (config.json with a model_type)."""
    if not folder.is_dir():
        return False
    config = folder / "config.json"
    if config.is_file():
        try:
            return "model_type" in json.loads(config.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return False
    return not any(folder.iterdir())
