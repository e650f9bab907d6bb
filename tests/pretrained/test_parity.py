"""hone's models on Hugging Face checkpoints against transformers on the same folders (fp32):
the same logits, loss and greedy tokens; hone's saved folders load in transformers (one file
or shards) to the same logits; loading builds on the meta device and maps the file.
The refusals: unknown model types, features hone does not compute, pickles."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hone.errors import ConfigError
from hone.models.generate import generate
from hone.models.gpt import GPTConfig
from hone.models.llama import LlamaConfig
from hone.pretrained.architectures import SUPPORTED_MODEL_TYPES, hf_config, hone_arch
from hone.pretrained.weights import NAME_MAPS, load_pretrained, save_pretrained_files

from .conftest import CHECKPOINTS, VOCAB_SIZE

transformers = pytest.importorskip("transformers")

NAMES = list(CHECKPOINTS)
FAMILY = {name: "gpt" if name.startswith("gpt2") else "llama" for name in NAMES}
TOLERANCE = 1e-4  # fp32 logits of magnitude ~3; measured differences: 0 (Llama), 1e-6 (GPT-2)
IDS = torch.randint(0, VOCAB_SIZE, (2, 24), generator=torch.Generator().manual_seed(0))


@dataclass
class Pair:
    """One checkpoint loaded by both sides."""

    folder: Path
    reference: nn.Module  # transformers' model
    model: nn.Module  # hone's
    family: str
    arch: LlamaConfig | GPTConfig


@pytest.fixture(scope="module")
def pair(tiny_checkpoint: Callable[[str], Path]) -> Callable[[str], Pair]:
    """`pair(name)`: checkpoint `name` loaded by transformers and by hone, once per module."""
    loaded: dict[str, Pair] = {}

    def load(name: str) -> Pair:
        if name not in loaded:
            folder = tiny_checkpoint(name)
            reference = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
            loaded[name] = Pair(folder, reference, *load_pretrained(folder))
        return loaded[name]

    return load


def reference_logits(model: nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def hone_logits(model: nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(ids)


@pytest.mark.parametrize("name", NAMES)
def test_logits_and_loss_match_transformers(name: str, pair: Callable[[str], Pair]) -> None:
    p = pair(name)
    assert p.family == FAMILY[name]
    expected, logits = reference_logits(p.reference), hone_logits(p.model)
    assert logits.shape == (*IDS.shape, VOCAB_SIZE)
    assert (logits - expected).abs().max() < TOLERANCE, name
    with torch.no_grad():
        reference_loss = p.reference(IDS, labels=IDS).loss  # transformers shifts the labels
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB_SIZE), IDS[:, 1:].reshape(-1))
    assert abs(loss.item() - reference_loss.item()) < 1e-5, name


@pytest.mark.parametrize("name", NAMES)
def test_greedy_tokens_match_transformers(name: str, pair: Callable[[str], Pair]) -> None:
    p = pair(name)
    prompt = IDS[:1, :6]
    # eos_token_id=None: transformers would stop at the end-of-text id, hone draws on
    expected = p.reference.generate(
        prompt, max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    assert expected.shape == (1, 6 + 32)
    assert torch.equal(generate(p.model, prompt, 32, temperature=0), expected), name
    uncached = nn.Sequential(p.model)  # no new_kv_cache: the whole context at every step
    uncached.block_size = p.model.block_size  # type: ignore[assignment]
    assert torch.equal(generate(uncached, prompt, 32, temperature=0), expected), name


@pytest.mark.parametrize("name", NAMES)
def test_saved_folder_loads_in_transformers(
    name: str, pair: Callable[[str], Pair], tmp_path: Path
) -> None:
    p = pair(name)
    save_pretrained_files(p.model, p.family, p.arch, tmp_path, bos_token_id=0, eos_token_id=1)
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
    ]
    assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == 1
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    mistral_as_llama = "LlamaForCausalLM" if name == "mistral" else None  # the same model
    assert type(reloaded).__name__ == mistral_as_llama or type(p.reference).__name__
    expected = reference_logits(p.reference)
    assert (reference_logits(reloaded) - expected).abs().max() < TOLERANCE, name
    again, family, arch = load_pretrained(tmp_path)  # and back into hone: the same tensors
    assert (family, arch) == (p.family, p.arch)
    assert all(
        torch.equal(a, b)
        for a, b in zip(again.state_dict().values(), p.model.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_sharded_save_loads_both_ways(
    name: str, pair: Callable[[str], Pair], tmp_path: Path
) -> None:
    p = pair(name)
    written = save_pretrained_files(p.model, p.family, p.arch, tmp_path, max_shard_bytes=100_000)
    shards = sorted(f.name for f in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not (tmp_path / "model.safetensors").exists()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert set(written) >= {tmp_path / shard for shard in shards}
    expected = reference_logits(p.reference)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert (reference_logits(reloaded) - expected).abs().max() < TOLERANCE
    model, _, _ = load_pretrained(tmp_path)
    assert (hone_logits(model) - expected).abs().max() < TOLERANCE
    # saving again in one file replaces the shards: a folder never holds two layouts
    save_pretrained_files(p.model, p.family, p.arch, tmp_path)
    assert sorted(f.name for f in tmp_path.glob("model*")) == ["model.safetensors"]


@pytest.mark.parametrize("name", ["llama", "llama3", "qwen3", "gpt2"])
def test_loading_maps_the_file_and_leaves_nothing_on_meta(
    name: str, pair: Callable[[str], Pair]
) -> None:
    p = pair(name)
    tensors = [*p.model.parameters(), *p.model.buffers()]
    assert not any(t.is_meta for t in tensors)
    assert all(t.dtype == torch.float32 for t in tensors)
    tied = p.arch.tie_embeddings
    assert (p.model.lm_head.weight is p.model.token_embedding.weight) == tied
    if p.family == "llama":  # the rotary frequencies, recomputed after loading: to the bit
        assert torch.equal(p.model.rope_inv_freq, p.reference.model.rotary_emb.inv_freq)
    if Path("/proc/self/maps").exists():  # no copies: each weight lies in the file's mapping
        transposed = NAME_MAPS[p.family].is_transposed  # GPT-2's Conv1D weights: copies
        files = {
            _mapped_file(t.data_ptr())
            for name, t in p.model.named_parameters()
            if not transposed(name)
        }
        assert files == {str(p.folder / "model.safetensors")}, files
    half, _, _ = load_pretrained(p.folder, dtype=torch.bfloat16)
    assert all(t.dtype == torch.bfloat16 for t in half.parameters())
    assert (hone_logits(half).float() - hone_logits(p.model)).abs().max() < 0.2


def _mapped_file(address: int) -> str | None:
    """The file whose memory mapping holds `address` (Linux), None for anonymous memory."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *fields = line.split()
        low, high = (int(end, 16) for end in span.split("-"))
        if low <= address < high:
            return fields[4] if len(fields) > 4 else None
    return None


def _config(tiny_checkpoint: Callable[[str], Path], name: str, **changes: Any) -> dict[str, Any]:
    config = json.loads((tiny_checkpoint(name) / "config.json").read_text())
    return {**config, **changes}


def test_configs_that_hone_cannot_compute_are_refused_in_one_line(
    tiny_checkpoint: Callable[[str], Path],
) -> None:
    refusals = {
        "model_type 'phi3', which hone does not support": _config(
            tiny_checkpoint, "llama", model_type="phi3"
        ),
        "scales its rotary positions by 'yarn'": _config(
            tiny_checkpoint,
            "llama",
            rope_scaling={"rope_type": "yarn", "factor": 4.0},
            rope_parameters=None,
        ),
        "the activation 'gelu'": _config(tiny_checkpoint, "llama", hidden_act="gelu"),
        "a bias on the attention's output": _config(tiny_checkpoint, "llama", attention_bias=True),
        "an MLP 100 wide": _config(tiny_checkpoint, "gpt2", n_inner=100),
    }
    for message, config in refusals.items():
        with pytest.raises(ConfigError, match=message) as refused:
            hone_arch(config)
        assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match=", ".join(SUPPORTED_MODEL_TYPES)):
        hone_arch({"model_type": "phi3"})


def test_a_sliding_window_caps_the_context_where_it_is_exact(
    tiny_checkpoint: Callable[[str], Path],
) -> None:
    # within its window a sliding mask is the causal mask: hone runs the checkpoint up to it
    assert hone_arch(_config(tiny_checkpoint, "mistral", sliding_window=16))[1].block_size == 16
    assert hone_arch(_config(tiny_checkpoint, "mistral", sliding_window=4096))[1].block_size == 128
    no_window_key = _config(tiny_checkpoint, "mistral", max_position_embeddings=8192)
    del no_window_key["sliding_window"]  # transformers' Mistral then slides 4096 tokens
    assert hone_arch(no_window_key)[1].block_size == 4096
    qwen2 = _config(tiny_checkpoint, "qwen2", sliding_window=16, layer_types=None)
    assert hone_arch({**qwen2, "use_sliding_window": False})[1].block_size == 128
    assert (
        hone_arch({**qwen2, "use_sliding_window": True, "max_window_layers": 1})[1].block_size == 16
    )
    every_layer_full = {**qwen2, "use_sliding_window": True, "layer_types": ["full_attention"] * 2}
    assert hone_arch(every_layer_full)[1].block_size == 128


def test_a_pickle_only_folder_is_refused_without_unpickling(
    tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    (tmp_path / "config.json").write_bytes((tiny_checkpoint("llama") / "config.json").read_bytes())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a pickle: never opened")
    with pytest.raises(ConfigError, match="never unpickles") as refused:
        load_pretrained(tmp_path)
    assert "\n" not in str(refused.value)


def test_hone_models_without_a_hugging_face_twin_are_refused() -> None:
    with pytest.raises(ConfigError, match="model.pos = 'rope' has no Hugging Face equivalent"):
        hf_config("gpt", GPTConfig(pos="rope"), 64)
    with pytest.raises(ConfigError, match="set --model.qkv_bias=false"):
        hf_config("llama", LlamaConfig(qkv_bias=True, qk_norm=True), 64)
