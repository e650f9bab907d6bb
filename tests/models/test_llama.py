"""The Llama family on its own (its parity with transformers is in tests/pretrained): the
cache decodes what a full forward computes, both attention kernels agree, the config's rules
name the flag."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hone.config import ModelConfig
from hone.errors import ConfigError
from hone.models import ModelSpec, build_model
from hone.models.generate import generate
from hone.models.llama import Llama, LlamaConfig, rope_frequencies

VOCAB = 40


def tiny(**changes: object) -> Llama:
    torch.manual_seed(0)
    fields = {"n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 32, "block_size": 24}
    cfg = ModelConfig(name="llama", **{**fields, **changes})
    model = build_model(cfg, ModelSpec("lm", (24,), VOCAB, vocab_size=VOCAB))
    assert isinstance(model, Llama)
    with torch.no_grad():  # gains and biases off their 1 and 0, so that they matter
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


@pytest.mark.parametrize("attn", ["sdpa", "plain"])
def test_the_cache_decodes_what_a_full_forward_computes(attn: str) -> None:
    model = tiny(attn=attn, qk_norm=True, qkv_bias=True)
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_kv_cache()
        # a prompt, a chunk after it (needs its own mask), then one token at a time
        steps = [model(idx[:, :5], cache), model(idx[:, 5:9], cache)]
        steps += [model(idx[:, t : t + 1], cache) for t in range(9, 12)]
    assert cache.keys[0] is not None and cache.keys[0].size(1) == 2  # the kv heads only
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    uncached = nn.Sequential(model)
    uncached.block_size = model.block_size  # type: ignore[assignment]
    prompt = idx[:1, :4]
    assert torch.equal(
        generate(model, prompt, 16, temperature=0), generate(uncached, prompt, 16, temperature=0)
    )


def test_both_attention_kernels_agree() -> None:
    idx = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(tiny(attn="sdpa")(idx), tiny(attn="plain")(idx), atol=1e-5)


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    idx = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(3))
    grads = []
    for checkpointing in (False, True):
        model = tiny().train()
        model.activation_checkpointing = checkpointing
        model(idx).square().mean().backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


def test_sizes_flops_and_tied_head() -> None:
    model = tiny(tie_embeddings=True)
    cfg = model.config
    assert (cfg.kv_heads, cfg.head_width, cfg.mlp_width) == (2, 8, 128)  # 8/3 * 32 -> 64s
    assert model.lm_head.weight is model.token_embedding.weight
    n = sum(p.numel() for p in model.parameters())
    assert model.context_length == 24
    assert model.flops_per_token() == 6 * n + 12 * 2 * 4 * 8 * 24


def test_llama3_rope_slows_only_the_long_wavelengths() -> None:
    plain = rope_frequencies(LlamaConfig(head_dim=16, n_head=1, n_embd=16))
    scaled = rope_frequencies(
        LlamaConfig(head_dim=16, n_head=1, n_embd=16, rope_scaling="llama3", rope_factor=8.0,
                    rope_original_block_size=32)
    )  # fmt: skip
    wavelength = 2 * math.pi / plain  # 6.3, 19.9, 62.8, ...: one of each band
    assert torch.equal(scaled[wavelength < 8], plain[wavelength < 8])  # 32 / high_freq_factor
    assert torch.equal(scaled[wavelength > 32], plain[wavelength > 32] / 8)  # 32 / low_freq
    between = (wavelength >= 8) & (wavelength <= 32)
    assert between.any() and (scaled[between] < plain[between]).all()
    assert (scaled[between] > plain[between] / 8).all()


def test_config_rules_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="set --model.n_kv_head to a divisor of 4"):
        LlamaConfig(n_head=4, n_kv_head=3).validate()
    with pytest.raises(ConfigError, match="even head width, got 7"):
        LlamaConfig(head_dim=7).validate()
    with pytest.raises(ConfigError, match="set --model.head_dim or --model.n_head"):
        LlamaConfig(n_embd=30, n_head=4).validate()
    LlamaConfig(n_embd=30, n_head=4, head_dim=8).validate()  # a head width of its own
