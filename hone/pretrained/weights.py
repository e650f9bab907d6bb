"""Hugging Face safetensors checkpoints in and out of hone's models, one tensor at a time.

`load_pretrained` builds the model on the meta device (no memory, no initialization) and
hands it the checkpoint's tensors as they lie memory-mapped in the safetensors file(s), so a
model of N bytes costs N bytes of page cache, not 2 N of copies; `save_pretrained_files`
writes a folder `transformers.AutoModelForCausalLM.from_pretrained` loads. The names of the
tensors differ between the two sides; one `NameMap` per family says how, both ways.

A folder with only `pytorch_model.bin` is refused: hone never unpickles (a pickle can run
code on load).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from hone.config import ModelConfig
from hone.errors import ConfigError
from hone.models import MODELS, ModelSpec
from hone.models.gpt import GPTConfig
from hone.models.llama import LlamaConfig
from hone.pretrained.architectures import hf_config, hone_arch

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # transformers' own default shard size


@dataclass(frozen=True)
class NameMap:
    """hone <-> Hugging Face tensor names of one family: modules outside the blocks (`top`),
    the prefix of block i on each side, and modules inside a block. A tensor name is the
    module's name, a dot and the parameter's (weight, bias)."""

    top: dict[str, str]  # hone module -> HF module
    blocks: str  # HF's prefix of the blocks (hone's is "blocks")
    block: dict[str, str]  # hone module inside block i -> HF module inside it
    transposed: frozenset[str] = frozenset()  # block modules whose weight HF stores (in, out)
    ignored: tuple[str, ...] = ()  # suffixes of HF names that hold no weight (old buffers)
    optional_prefix: str = ""  # HF names may lack it (checkpoints saved from the bare model)

    def to_hf(self, name: str) -> str:
        module, param = name.rsplit(".", 1)
        if module in self.top:
            return f"{self.top[module]}.{param}"
        blocks, layer, inner = module.split(".", 2)
        if blocks != "blocks" or inner not in self.block:
            raise ConfigError(
                f"the tensor {name!r} has no Hugging Face name; a model changed by a converter "
                "(LoRA, int8, pruning) cannot be written as a Hugging Face checkpoint"
            )
        return f"{self.blocks}.{layer}.{self.block[inner]}.{param}"

    def to_hone(self, hf_name: str) -> str | None:
        """hone's name for `hf_name`, or None when hone has no such tensor."""
        prefix = self.optional_prefix
        if prefix and not hf_name.startswith(prefix) and not hf_name.startswith("lm_head."):
            hf_name = prefix + hf_name
        module, param = hf_name.rsplit(".", 1)
        for ours, theirs in self.top.items():
            if module == theirs:
                return f"{ours}.{param}"
        if not module.startswith(self.blocks + "."):
            return None
        layer, inner = module[len(self.blocks) + 1 :].split(".", 1)
        for ours, theirs in self.block.items():
            if inner == theirs:
                return f"blocks.{layer}.{ours}.{param}"
        return None

    def is_transposed(self, hone_name: str) -> bool:
        parts = hone_name.split(".")
        return (
            parts[0] == "blocks"
            and parts[-1] == "weight"
            and ".".join(parts[2:-1]) in self.transposed
        )


NAME_MAPS = {
    "llama": NameMap(
        top={
            "token_embedding": "model.embed_tokens",
            "norm": "model.norm",
            "lm_head": "lm_head",
        },
        blocks="model.layers",
        block={
            "norm1": "input_layernorm",
            "attn.q": "self_attn.q_proj",
            "attn.k": "self_attn.k_proj",
            "attn.v": "self_attn.v_proj",
            "attn.proj": "self_attn.o_proj",
            "attn.q_norm": "self_attn.q_norm",
            "attn.k_norm": "self_attn.k_norm",
            "norm2": "post_attention_layernorm",
            "mlp.gate": "mlp.gate_proj",
            "mlp.up": "mlp.up_proj",
            "mlp.down": "mlp.down_proj",
        },
        ignored=("rotary_emb.inv_freq",),  # a buffer some old Llama checkpoints hold
    ),
    "gpt": NameMap(
        top={
            "token_embedding": "transformer.wte",
            "pos_embedding": "transformer.wpe",
            "norm": "transformer.ln_f",
            "lm_head": "lm_head",
        },
        blocks="transformer.h",
        block={
            "norm1": "ln_1",
            "attn.qkv": "attn.c_attn",
            "attn.proj": "attn.c_proj",
            "norm2": "ln_2",
            "mlp.fc": "mlp.c_fc",
            "mlp.proj": "mlp.c_proj",
        },
        # GPT-2's Conv1D keeps its weight (in, out), nn.Linear (out, in)
        transposed=frozenset({"attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"}),
        ignored=(".attn.bias", ".attn.masked_bias"),  # causal-mask buffers of old GPT-2 files
        optional_prefix="transformer.",  # the original gpt2 files were saved from GPT2Model
    ),
}


def checkpoint_files(folder: Path) -> list[Path]:
    """The safetensors file(s) of a checkpoint folder: model.safetensors, or the shards its
    index names. A folder with only PyTorch pickles is refused in one line."""
    if (folder / WEIGHTS_INDEX).is_file():
        index = json.loads((folder / WEIGHTS_INDEX).read_text())
        return [folder / name for name in sorted(set(index["weight_map"].values()))]
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    if list(folder.glob("*.bin")):
        raise ConfigError(
            f"{folder} holds PyTorch pickles (pytorch_model.bin) but no model.safetensors; hone "
            "never unpickles (a pickle can run code): use a checkpoint or revision with safetensors"
        )
    raise ConfigError(f"{folder} holds no model.safetensors (nor {WEIGHTS_INDEX})")


def read_hf_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"{folder} has no config.json; give the folder of a Hugging Face checkpoint"
        )
    return dict(json.loads(path.read_text()))


def build_empty(family: str, arch: LlamaConfig | GPTConfig) -> nn.Module:
    """The model of `family` with `arch`, its tensors on the meta device (shapes only)."""
    vocab_size = arch.vocab_size
    spec = ModelSpec("lm", (arch.block_size,), vocab_size, vocab_size=vocab_size)
    with torch.device("meta"):
        return MODELS.get(family)(ModelConfig(name=family, arch=arch), spec)


def load_pretrained(
    folder: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, str, LlamaConfig | GPTConfig]:
    """(model, family, arch) of the Hugging Face checkpoint in `folder` (config.json and
    safetensors weights), in eval mode, its weights in the checkpoint's dtype unless `dtype`
    is given, on `device`."""
    folder = Path(folder)
    family, arch = hone_arch(read_hf_config(folder))
    files = checkpoint_files(folder)
    model = build_empty(family, arch)
    names, expected = NAME_MAPS[family], model.state_dict()
    tied = "lm_head.weight" if arch.tie_embeddings else None
    state: dict[str, torch.Tensor] = {}
    unexpected = []
    for path in files:
        # safe_open maps the file: get_tensor returns a view of the mapping, read on first use
        with safe_open(str(path), framework="pt") as f:
            for hf_name in f.keys():
                name = names.to_hone(hf_name)
                if name is None:
                    if not hf_name.endswith(names.ignored):
                        unexpected.append(hf_name)
                    continue
                if name == tied:  # some tied checkpoints store the head too: it is the embedding
                    continue
                tensor = f.get_tensor(hf_name)
                if names.is_transposed(name):
                    tensor = tensor.t().contiguous()
                state[name] = tensor.to(device=device, dtype=dtype or tensor.dtype)
    _check_names(folder, family, expected, state, unexpected, tied)
    assign_weights(model, state)
    return model.eval(), family, arch


def assign_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give `model`, built on the meta device, the tensors of `state` as its own (no copy):
    a parameter shared by several modules (a tied head) takes the one tensor of its group
    that `state` holds, as safetensors' save_model wrote it once; the buffers no file holds
    are recomputed (`reset_buffers`)."""
    groups: dict[int, list[str]] = {}  # parameters shared by several modules, by identity
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    shared = [names for names in groups.values() if len(names) > 1]
    model.load_state_dict(state, assign=True, strict=False)
    for names in shared:  # assign gave each name its own Parameter: tie them again
        held = next(n for n in names if n in state)
        param = model.get_parameter(held)
        for name in names:
            module, _, attr = name.rpartition(".")
            setattr(model.get_submodule(module), attr, param)
    reset_buffers = getattr(model, "reset_buffers", None)
    if reset_buffers is not None:
        reset_buffers()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    assert not left, f"tensors left on the meta device: {left}"


# madvise(2)'s advice to reclaim pages now (Linux 5.4): the bytes stay what they are, a later
# read faults them in again. Python's mmap.madvise needs the mmap object, which safetensors
# keeps to itself, hence libc's through ctypes.
_MADV_PAGEOUT = 21


def release_mapped_pages(tensors: Iterable[torch.Tensor]) -> None:
    """Ask the kernel to reclaim the pages of `tensors` that are views of a mapped file (a
    checkpoint safe_open mapped): what a weight cast to another dtype leaves behind. The
    file's mapping stays open while any of its tensors lives, and every page read once
    counts in the process's RSS until then: an fp32 SmolLM2-135M whose layers a LoRA run
    holds in bf16 kept 424 MiB of such pages. Memory of its own (not a file's) is left
    alone, and a tensor still in use loses nothing (its pages are read again)."""
    import ctypes

    ranges = [(t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for t in tensors]
    if not ranges:
        return
    try:
        with open("/proc/self/maps") as f:  # "start-end perms offset dev inode path"
            maps = [line.split() for line in f]
    except OSError:  # not Linux: the pages stay until the mapping closes
        return
    files = []  # (start, end) of each file mapping
    for fields in maps:
        if len(fields) >= 6 and fields[4] != "0" and fields[5].startswith("/"):
            low, high = fields[0].split("-")
            files.append((int(low, 16), int(high, 16)))
    page = os.sysconf("SC_PAGE_SIZE")
    madvise = ctypes.CDLL(None).madvise
    for start, end in ranges:
        if any(low <= start and end <= high for low, high in files):
            first, last = -(-start // page) * page, end // page * page  # whole pages only
            if last > first:
                madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_PAGEOUT)


def read_safetensors(
    path: str | Path, device: str | torch.device = "cpu", mapped: bool = True
) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on `device`. `mapped`: views of the file mapped
    into memory, read when first used and shared with every process that maps it (a file
    that is never rewritten in place: rewriting it under a mapping faults its readers).
    Otherwise each tensor is read into memory of its own, one at a time: the file's bytes
    once, never a second copy."""
    if mapped:
        with safe_open(str(path), framework="pt") as f:
            return {name: f.get_tensor(name).to(device) for name in f.keys()}
    tensors = {}
    with open(path, "rb") as f:
        header_bytes = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_bytes))
        header.pop("__metadata__", None)
        for name, entry in header.items():
            start, end = entry["data_offsets"]
            tensor = torch.empty(entry["shape"], dtype=_SAFETENSORS_DTYPES[entry["dtype"]])
            assert tensor.numel() * tensor.element_size() == end - start, name
            if end > start:
                f.seek(8 + header_bytes + start)
                f.readinto(tensor.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]
            tensors[name] = tensor.to(device)
    return tensors


def write_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write `tensors` (on the CPU) as a safetensors file, one tensor at a time from its own
    memory: safetensors' save_file first makes a bytes copy of every tensor (a 1 GB model
    then costs 2 GB, its mapped weights and their copy)."""
    names = {dtype: name for name, dtype in _SAFETENSORS_DTYPES.items()}
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        entry = {"dtype": names[tensor.dtype], "shape": list(tensor.shape)}
        header[name] = {**entry, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format's alignment of the data that follows
    with open(path, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for tensor in tensors.values():
            if tensor.numel():
                f.write(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data)


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _check_names(
    folder: Path,
    family: str,
    expected: dict[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    unexpected: list[str],
    tied: str | None,
) -> None:
    """One line for a checkpoint whose tensors are not the ones its config.json implies."""
    if unexpected:
        raise ConfigError(
            f"{folder} holds {len(unexpected)} tensors hone's {family} has no place for "
            f"(e.g. {unexpected[0]!r}): a variant of the architecture hone does not support"
        )
    missing = [name for name in expected if name not in state and name != tied]
    if missing:
        raise ConfigError(
            f"{folder} lacks {len(missing)} tensors its config.json implies (e.g. "
            f"{NAME_MAPS[family].to_hf(missing[0])!r}): the weights and config.json disagree"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ConfigError(
                f"{folder}: {NAME_MAPS[family].to_hf(name)!r} has shape {tuple(tensor.shape)}, "
                f"config.json implies {tuple(expected[name].shape)}"
            )


def save_pretrained_files(
    model: nn.Module,
    family: str,
    arch: LlamaConfig | GPTConfig,
    folder: str | Path,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    bos_token_id: int | None = None,
    eos_token_id: int | list[int] | None = None,
) -> list[Path]:
    """Write `model` (of hone's `family`, built with `arch`) into `folder` as a Hugging Face
    checkpoint: config.json, generation_config.json and model.safetensors, or shards of at
    most `max_shard_bytes` each (a tensor larger than that gets a shard of its own) with
    model.safetensors.index.json. Returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = NAME_MAPS[family]
    vocab_size = model.get_parameter("lm_head.weight").size(0)
    config = hf_config(family, arch, vocab_size, bos_token_id, eos_token_id)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and arch.tie_embeddings:
            continue  # transformers ties it to the embedding on load
        tensor = tensor.detach().to("cpu")
        tensors[names.to_hf(name)] = tensor.t() if names.is_transposed(name) else tensor
    config["torch_dtype"] = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    shards = _shards(tensors, max_shard_bytes)
    # A folder that held an earlier save in the other layout would load that one's weights
    for stale in [
        folder / WEIGHTS,
        folder / WEIGHTS_INDEX,
        *folder.glob("model-*-of-*.safetensors"),
    ]:
        stale.unlink(missing_ok=True)
    written = []
    weight_map = {}
    for number, shard in enumerate(shards, 1):
        name = (
            WEIGHTS if len(shards) == 1 else f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        )
        write_safetensors(shard, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        written.append(folder / name)
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / WEIGHTS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
        written.append(folder / WEIGHTS_INDEX)
    generation = {k: config[k] for k in ("bos_token_id", "eos_token_id") if config[k] is not None}
    for file_name, content in (("config.json", config), ("generation_config.json", generation)):
        (folder / file_name).write_text(json.dumps(content, indent=2) + "\n")
        written.append(folder / file_name)
    return written


def _shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Tensors in order, cut into groups of at most `max_bytes` (a larger tensor alone)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    return shards
