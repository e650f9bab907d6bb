"""Tiny Hugging Face checkpoints written by `transformers` itself, one per supported family.

`tiny_checkpoint(name)` (a session fixture) returns the folder of checkpoint `name` (a key of
CHECKPOINTS): config.json, model.safetensors, generation_config.json, as
`save_pretrained` writes them, and a small byte-level BPE tokenizer (tokenizer.json,
tokenizer_config.json; `<s>` = 0 is BOS, `</s>` = 1 EOS) saved by `PreTrainedTokenizerFast`.
Each folder is written on first use and shared by the whole session. The weights are random
but not degenerate: every parameter (norm gains and biases included, which transformers
initializes to 1 and 0) gets noise, so a tensor loaded into the wrong place changes logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
transformers.utils.logging.disable_progress_bar()  # no bar per save and load in the logs

VOCAB_SIZE = 384  # the models'; the tokenizer's is at most this (a padded embedding, as often)
BOS, EOS = 0, 1
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! A tiny model learns nothing, but computes the same numbers.",
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.",
    "def add(a, b):\n    return a + b\n",
    "Naïve café, 日本語, emojis 😀 and tabs\there.",
] * 4

_LLAMA_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
}
# name -> (transformers config class, its keywords). Tied and untied heads, grouped-query
# attention, llama3 rope scaling whose three frequency bands all occur at head width 16,
# Qwen2's q/k/v biases, Qwen3's head width of its own (24, not 64 / 4) and q/k norms.
CHECKPOINTS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", {**_LLAMA_SHAPE, "tie_word_embeddings": False}),
    "llama3": (
        "LlamaConfig",
        {
            **_LLAMA_SHAPE,
            "tie_word_embeddings": True,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        },
    ),
    "mistral": (
        "MistralConfig",
        {**_LLAMA_SHAPE, "sliding_window": None, "tie_word_embeddings": False},
    ),
    "qwen2": ("Qwen2Config", {**_LLAMA_SHAPE, "tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", {**_LLAMA_SHAPE, "head_dim": 24, "tie_word_embeddings": True}),
    "gpt2": (
        "GPT2Config",
        {"n_embd": 48, "n_layer": 2, "n_head": 4, "n_positions": 128, "tie_word_embeddings": True},
    ),
    "gpt2-untied": (
        "GPT2Config",
        {"n_embd": 48, "n_layer": 2, "n_head": 4, "n_positions": 128, "tie_word_embeddings": False},
    ),
}


def _tokenizer() -> Any:
    """A byte-level BPE of at most VOCAB_SIZE tokens trained on SENTENCES, wrapped as
    transformers wraps a checkpoint's tokenizer.json."""
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - 8,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(SENTENCES, trainer)
    assert bpe.token_to_id("<s>") == BOS and bpe.token_to_id("</s>") == EOS
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>"
    )


def _write_checkpoint(folder: Path, name: str, tokenizer: Any) -> None:
    config_class, keywords = CHECKPOINTS[name]
    config = getattr(transformers, config_class)(
        vocab_size=VOCAB_SIZE, bos_token_id=BOS, eos_token_id=EOS, **keywords
    )
    torch.manual_seed(sum(map(ord, name)))
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; two stall when another process holds a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def notes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small UTF-8 text file (SENTENCES, three times) to continue training on."""
    path = tmp_path_factory.mktemp("text") / "notes.txt"
    path.write_text("\n".join(SENTENCES * 3) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`tiny_checkpoint(name) -> folder` of the checkpoint `name` (a key of CHECKPOINTS)."""
    root = tmp_path_factory.mktemp("checkpoints")
    tokenizer = _tokenizer()
    written: dict[str, Path] = {}

    def checkpoint(name: str) -> Path:
        assert name in CHECKPOINTS, f"no tiny checkpoint {name!r}; have {sorted(CHECKPOINTS)}"
        if name not in written:
            _write_checkpoint(root / name, name, tokenizer)
            written[name] = root / name
        return written[name]

    return checkpoint
