"""Hugging Face `config.json` <-> hone model family and architecture config, both ways.

Five `model_type`s map onto two hone families: llama, mistral, qwen2 and qwen3 onto the
Llama (`hone.models.llama`; SmolLM and SmolLM2 call themselves llama), gpt2 onto the GPT
(`hone.models.gpt`). A checkpoint that needs something hone's code does not compute (another
activation, a biased output projection, yarn rope scaling) is refused in one line: loading
it anyway would give other logits than the model was trained to give.

The facts about each config key (its default when absent, what it switches) are read from
the `transformers` configuration classes; no code of theirs is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hone.errors import ConfigError
from hone.models.gpt import GPTConfig
from hone.models.llama import LlamaConfig

HFConfig = dict[str, Any]  # a parsed config.json

# Defaults of the keys a config.json may leave out, per model_type (transformers' own).
_LLAMA_DEFAULTS: dict[str, HFConfig] = {
    "llama": {"max_position_embeddings": 2048, "rope_theta": 10000.0},
    "mistral": {
        "max_position_embeddings": 4096 * 32,
        "rope_theta": 10000.0,
        "sliding_window": 4096,
    },
    "qwen2": {"max_position_embeddings": 32768, "rope_theta": 10000.0, "sliding_window": 4096},
    "qwen3": {
        "max_position_embeddings": 32768,
        "rope_theta": 10000.0,
        "sliding_window": 4096,
        "head_dim": 128,
    },
}
_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gpt2": "GPT2LMHeadModel",
}
# GPT-2's activation names -> GPTConfig.mlp; "gelu_new" is the tanh approximation GPT-2 used
_GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


def _refuse(model_type: str, what: str) -> ConfigError:
    return ConfigError(
        f"this {model_type} checkpoint has {what}, which hone's model code does not compute; "
        "pick a checkpoint without it"
    )


def _rope(hf: HFConfig, model_type: str, block_size: int) -> dict[str, Any]:
    """LlamaConfig's rope fields from `rope_parameters` (transformers 5) or `rope_theta` and
    `rope_scaling` (transformers 4 and most configs on the Hub)."""
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    if any(isinstance(value, dict) for value in rope.values()):
        raise _refuse(model_type, "rotary settings per layer type")
    if rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise _refuse(model_type, "rotary positions on part of each head")
    theta = (
        rope.get("rope_theta") or hf.get("rope_theta") or _LLAMA_DEFAULTS[model_type]["rope_theta"]
    )
    kind = rope.get("rope_type", rope.get("type", "default"))
    fields: dict[str, Any] = {"rope_theta": float(theta)}
    if kind == "linear":
        fields.update(rope_scaling="linear", rope_factor=float(rope["factor"]))
    elif kind == "llama3":
        fields.update(
            rope_scaling="llama3",
            rope_factor=float(rope["factor"]),
            rope_low_freq_factor=float(rope["low_freq_factor"]),
            rope_high_freq_factor=float(rope["high_freq_factor"]),
            rope_original_block_size=int(rope.get("original_max_position_embeddings", block_size)),
        )
    elif kind != "default":
        raise ConfigError(
            f"this {model_type} checkpoint scales its rotary positions by {kind!r}; hone has "
            "'default', 'linear' and 'llama3'; pick a checkpoint with one of them"
        )
    return fields


def _sliding_window(hf: HFConfig, model_type: str, block_size: int) -> int:
    """The context hone can run the checkpoint at exactly: `block_size`, or the attention
    window when some layer slides one. Within the window a sliding mask is the causal mask,
    so capping the context there keeps every logit as the checkpoint computes it."""
    defaults = _LLAMA_DEFAULTS[model_type]
    window = hf.get("sliding_window", defaults.get("sliding_window"))  # llama has none
    if model_type in ("qwen2", "qwen3"):  # their window is off unless use_sliding_window
        layer_types = hf.get("layer_types")
        if layer_types is None:  # transformers slides the layers from max_window_layers on
            slides = hf.get("max_window_layers", 28) < hf["num_hidden_layers"]
        else:
            slides = "sliding_attention" in layer_types
        window = window if hf.get("use_sliding_window") and slides else None
    return min(block_size, window) if window else block_size


def _llama_arch(hf: HFConfig) -> LlamaConfig:
    model_type = hf["model_type"]
    defaults = _LLAMA_DEFAULTS[model_type]
    if hf.get("hidden_act", "silu") != "silu":
        raise _refuse(model_type, f"the activation {hf['hidden_act']!r} (hone's Llama: silu)")
    qkv_bias = model_type == "qwen2"  # Qwen2 always biases q, k and v (never the output)
    if model_type in ("llama", "qwen3") and hf.get("attention_bias"):  # the others ignore it
        raise _refuse(model_type, "a bias on the attention's output projection")
    if hf.get("mlp_bias"):
        raise _refuse(model_type, "biases in the MLP")
    n_embd, n_head = hf["hidden_size"], hf["num_attention_heads"]
    max_positions: int = hf.get("max_position_embeddings") or defaults["max_position_embeddings"]
    block_size = _sliding_window(hf, model_type, max_positions)
    arch = LlamaConfig(
        n_layer=hf["num_hidden_layers"],
        n_head=n_head,
        n_kv_head=hf.get("num_key_value_heads") or n_head,
        n_embd=n_embd,
        head_dim=hf.get("head_dim") or defaults.get("head_dim") or n_embd // n_head,
        intermediate_size=hf["intermediate_size"],
        vocab_size=hf["vocab_size"],
        block_size=block_size,
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        qkv_bias=qkv_bias,
        qk_norm=model_type == "qwen3",
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        **_rope(hf, model_type, max_positions),
    )
    arch.validate()
    return arch


def _gpt2_arch(hf: HFConfig) -> GPTConfig:
    activation = hf.get("activation_function", "gelu_new")
    if activation not in _GPT2_ACTIVATIONS:
        raise _refuse("gpt2", f"the activation {activation!r}")
    n_embd = hf.get("n_embd", 768)
    if hf.get("n_inner") not in (None, 4 * n_embd):
        raise _refuse("gpt2", f"an MLP {hf['n_inner']} wide (hone's GPT: 4 n_embd)")
    if hf.get("layer_norm_epsilon", 1e-5) != 1e-5:
        raise _refuse("gpt2", f"LayerNorm epsilon {hf['layer_norm_epsilon']} (hone's GPT: 1e-5)")
    if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx"):
        raise _refuse("gpt2", "attention scores scaled other than by 1/sqrt(head width)")
    if hf.get("add_cross_attention"):
        raise _refuse("gpt2", "cross-attention")
    arch = GPTConfig(
        n_layer=hf.get("n_layer", 12),
        n_head=hf.get("n_head", 12),
        n_embd=n_embd,
        block_size=hf.get("n_positions", 1024),
        vocab_size=hf.get("vocab_size", 50257),
        bias=True,
        norm="layernorm",
        pos="learned",
        mlp=_GPT2_ACTIVATIONS[activation],
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
    )
    arch.validate()
    return arch


_READERS: dict[str, tuple[str, Callable[[HFConfig], Any]]] = {
    "llama": ("llama", _llama_arch),
    "mistral": ("llama", _llama_arch),
    "qwen2": ("llama", _llama_arch),
    "qwen3": ("llama", _llama_arch),
    "gpt2": ("gpt", _gpt2_arch),
}
SUPPORTED_MODEL_TYPES = tuple(_READERS)


def hone_arch(hf: HFConfig) -> tuple[str, LlamaConfig | GPTConfig]:
    """The hone model family ("llama" or "gpt") and its architecture config for a parsed
    Hugging Face config.json. Dropout is 0 (the checkpoint's own rates are for training from
    scratch); set the arch's `dropout` to fine-tune with some."""
    model_type = hf.get("model_type")
    if model_type not in _READERS:
        raise ConfigError(
            f"config.json has model_type {model_type!r}, which hone does not support; hone "
            f"reads {', '.join(SUPPORTED_MODEL_TYPES)} (SmolLM and SmolLM2 are llama)"
        )
    family, read = _READERS[model_type]
    try:
        return family, read(hf)
    except KeyError as missing:
        raise ConfigError(f"this {model_type} config.json lacks the key {missing}") from None


def hf_config(
    family: str,
    arch: LlamaConfig | GPTConfig,
    vocab_size: int,
    bos_token_id: int | None = None,
    eos_token_id: int | list[int] | None = None,
) -> HFConfig:
    """The config.json with which `transformers` builds the same model as hone's `family`
    with `arch` and a vocabulary of `vocab_size` (the model's, which `arch.vocab_size = 0`
    leaves to the tokenizer). A hone feature that no supported model_type has is refused."""
    if family == "llama":
        assert isinstance(arch, LlamaConfig), arch
        hf = _llama_config(arch)
    elif family == "gpt":
        assert isinstance(arch, GPTConfig), arch
        hf = _gpt2_config(arch)
    else:
        raise ConfigError(
            f"model.name = {family!r} has no Hugging Face equivalent; hone writes 'llama' and "
            "'gpt' (GPT-2 shaped) models"
        )
    hf.update(vocab_size=vocab_size, bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    return {"architectures": [_ARCHITECTURES[hf["model_type"]]], **hf}


def _llama_config(arch: LlamaConfig) -> HFConfig:
    # Qwen3 is the Llama with q/k norms, Qwen2 the Llama with q/k/v biases; transformers'
    # llama has neither, and neither Qwen has both.
    if arch.qk_norm and arch.qkv_bias:
        raise ConfigError(
            "a Llama with both model.qk_norm and model.qkv_bias has no Hugging Face "
            "equivalent; set --model.qkv_bias=false or --model.qk_norm=false"
        )
    model_type = "qwen3" if arch.qk_norm else "qwen2" if arch.qkv_bias else "llama"
    if model_type == "qwen2" and arch.head_width != arch.n_embd // arch.n_head:
        raise ConfigError(
            "a Llama with model.qkv_bias needs model.head_dim = 0 (Qwen2 has no head width of "
            f"its own), got {arch.head_dim}; set --model.head_dim=0"
        )
    rope: HFConfig = {"rope_type": "default", "rope_theta": arch.rope_theta}
    if arch.rope_scaling == "linear":
        rope.update(rope_type="linear", factor=arch.rope_factor)
    elif arch.rope_scaling == "llama3":
        rope.update(
            rope_type="llama3",
            factor=arch.rope_factor,
            low_freq_factor=arch.rope_low_freq_factor,
            high_freq_factor=arch.rope_high_freq_factor,
            original_max_position_embeddings=arch.rope_original_block_size or arch.block_size,
        )
    return {
        "model_type": model_type,
        "hidden_size": arch.n_embd,
        "intermediate_size": arch.mlp_width,
        "num_hidden_layers": arch.n_layer,
        "num_attention_heads": arch.n_head,
        "num_key_value_heads": arch.kv_heads,
        "head_dim": arch.head_width,
        "hidden_act": "silu",
        "max_position_embeddings": arch.block_size,
        "rms_norm_eps": arch.norm_eps,
        "tie_word_embeddings": arch.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": arch.dropout,
        # transformers 4 reads rope_theta and rope_scaling, 5 rope_parameters: both written
        "rope_theta": arch.rope_theta,
        "rope_scaling": rope if arch.rope_scaling != "none" else None,
        "rope_parameters": rope,
        **({"mlp_bias": False} if model_type == "llama" else {}),
        **({"use_sliding_window": False} if model_type != "llama" else {}),
    }


def _gpt2_config(arch: GPTConfig) -> HFConfig:
    unlike_gpt2 = {
        "model.norm": (arch.norm, "layernorm"),
        "model.pos": (arch.pos, "learned"),
        "model.bias": (arch.bias, True),
        "model.qk_norm": (arch.qk_norm, False),
    }
    for key, (value, gpt2) in unlike_gpt2.items():
        if value != gpt2:
            raise ConfigError(
                f"a GPT with {key} = {value!r} has no Hugging Face equivalent (GPT-2 has "
                f"{gpt2!r}); only GPT-2 shaped GPTs can be written"
            )
    if arch.mlp == "relu2":
        raise ConfigError(
            "a GPT with model.mlp = 'relu2' has no Hugging Face equivalent (GPT-2 has "
            "'gelu_tanh'); only GPT-2 shaped GPTs can be written"
        )
    return {
        "model_type": "gpt2",
        "n_layer": arch.n_layer,
        "n_head": arch.n_head,
        "n_embd": arch.n_embd,
        "n_positions": arch.block_size,
        "n_inner": None,
        "activation_function": "gelu_new" if arch.mlp == "gelu_tanh" else "gelu",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": arch.dropout,
        "embd_pdrop": arch.dropout,
        "attn_pdrop": arch.dropout,
        "scale_attn_weights": True,
        "tie_word_embeddings": arch.tie_embeddings,
    }
