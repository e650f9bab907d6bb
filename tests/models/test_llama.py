"""The Llama family on its own (its parity with transformers is in tests/pretrained): the
cache decodes what a full forward computes, both attention kernels agree, the config's rules
name the flag."""

from __future__ import annotations

import contextlib
import math
import weakref
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from hone.config import ModelConfig
from hone.errors import ConfigError
from hone.finetune.lora import LoRA, lora_layers
from hone.models import ModelSpec, build_model, few_rows, llama_decode
from hone.models.generate import generate
from hone.models.llama import MLP, Llama, LlamaConfig, _RMSNormFunction, rope_frequencies
from hone.models.slot_cache import SlotCache

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


@pytest.mark.parametrize("changes", [{}, {"qk_norm": True, "qkv_bias": True}, {"lora": True}])
def test_the_lean_decode_step_gives_the_general_paths_logits(
    changes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """To the bit with F.linear's products; with the weights split in halves (the kernel
    few_rows chooses where the BLAS is slow at one row), to rounding. A LoRA model too: its
    layers take the frozen weight's product from the lean step."""
    lora = changes.pop("lora", False)
    model = tiny(**changes)
    if lora:
        LoRA(4, 8, 0.0, "all-linear").convert(model)
        with torch.no_grad():  # B off zero: the adapters change the logits
            for layer in lora_layers(model).values():
                layer.lora_b.weight.normal_(0, 0.1)
        model.eval()
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(4))
    lean_steps = []
    decode_token = llama_decode.decode_token

    def counted(*args: Any) -> torch.Tensor:
        lean_steps.append(1)
        return decode_token(*args)

    def decode() -> tuple[torch.Tensor, torch.Tensor]:
        cache = model.new_kv_cache()
        with torch.no_grad():
            steps = [model(idx[:, :5], cache)]  # the prompt: the general path
            steps += [model(idx[:, t : t + 1], cache) for t in range(5, 12)]
        assert cache.keys[-1] is not None
        return torch.cat(steps, dim=1), cache.keys[-1][:, :, :12]

    monkeypatch.setattr(llama_decode, "decode_token", counted)
    monkeypatch.setattr(few_rows, "_CHOSEN", {})
    monkeypatch.setattr(few_rows, "fastest", lambda rows, group: few_rows.plain)
    lean, lean_keys = decode()
    assert len(lean_steps) == 7
    monkeypatch.setattr(few_rows, "_CHOSEN", {})
    monkeypatch.setattr(few_rows, "fastest", lambda rows, group: few_rows.split)
    split, split_keys = decode()
    assert len(lean_steps) == 14
    assert set(few_rows._CHOSEN.values()) == {few_rows.split}
    assert len(few_rows._CHOSEN) == 5  # q, k, v's and proj's shape, gate and up, down, head
    monkeypatch.setattr(llama_decode, "lean_decodable", lambda *args: False)
    general, general_keys = decode()
    assert len(lean_steps) == 14
    assert torch.equal(lean, general) and torch.equal(lean_keys, general_keys)
    assert not torch.equal(split, general)  # another kernel: another rounding, and only that
    assert torch.allclose(split, general, atol=1e-5) and torch.allclose(
        split_keys, general_keys, atol=1e-5
    )


def test_the_lean_step_decodes_a_slot_caches_rows_at_their_own_positions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hone serve's batches: rows of prompts of different lengths, in slots out of order,
    decoded together: the general path's logits to the bit with F.linear's products."""
    model = tiny(qk_norm=True, qkv_bias=True)
    g = torch.Generator().manual_seed(5)
    prompts = {
        3: torch.randint(0, VOCAB, (1, 4), generator=g),
        0: torch.randint(0, VOCAB, (1, 7), generator=g),
    }
    monkeypatch.setattr(few_rows, "_CHOSEN", {})
    monkeypatch.setattr(few_rows, "fastest", lambda rows, group: few_rows.plain)

    def decode() -> torch.Tensor:
        cache = SlotCache(len(model.blocks), 4, 16)
        steps = []
        with torch.no_grad():
            for slot, prompt in prompts.items():  # each prompt alone into its slot
                cache.select([slot], prompt.size(1), prompt.device)
                model(prompt, cache)
            token = torch.tensor([[1], [2]])
            for _ in range(4):  # then both rows a token at a time
                cache.select([3, 0], 1, token.device)
                logits = model(token, cache)
                steps.append(logits)
                token = logits[:, -1].argmax(-1, keepdim=True)
        return torch.cat(steps, dim=1)

    lean = decode()
    monkeypatch.setattr(llama_decode, "lean_decodable", lambda *args: False)
    assert torch.equal(lean, decode())


def test_only_plain_layers_without_gradients_decode_the_lean_way() -> None:
    model = tiny()
    token = torch.tensor([[3]])
    with torch.no_grad():
        assert llama_decode.lean_decodable(model, token, model.new_kv_cache())
        assert not llama_decode.lean_decodable(model, torch.tensor([[3, 4]]), model.new_kv_cache())
        assert llama_decode.lean_decodable(model, token, SlotCache(2, 1, 8))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not llama_decode.lean_decodable(model, token, model.new_kv_cache())
        assert not llama_decode.lean_decodable(tiny(attn="plain"), token, model.new_kv_cache())
        assert not llama_decode.lean_decodable(
            tiny(dropout=0.1).train(), token, model.new_kv_cache()
        )
    assert not llama_decode.lean_decodable(model, token, model.new_kv_cache())  # gradients
    LoRA(4, 8, 0.0, "attention").convert(model)
    with torch.no_grad():  # LoRA layers take the product; a layer of another kind does not
        assert llama_decode.lean_decodable(model, token, model.new_kv_cache())
        model.blocks[0].mlp.up = nn.Sequential(model.blocks[0].mlp.up)
        assert not llama_decode.lean_decodable(model, token, model.new_kv_cache())


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


def test_the_lean_norm_and_mlp_give_autograds_gradients() -> None:
    """The RMSNorm that keeps only its input, and the MLP whose silu(gate) and product are
    made again in backward (hone.models.recompute), against autograd through the plain
    formulas, in fp32 and under bf16 autocast."""
    g = torch.Generator().manual_seed(5)
    x, gain = torch.randn(3, 5, 8, generator=g), torch.randn(8, generator=g) + 1
    mlp = MLP(LlamaConfig(n_embd=8, intermediate_size=16))

    def norm(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        out = _RMSNormFunction.apply(x, gain, 1e-5)
        assert isinstance(out, torch.Tensor)
        return out

    def plain_norm(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (8,), None, 1e-5).to(x.dtype) * gain

    def plain_mlp(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        return mlp.down(F.silu(mlp.gate(x)) * mlp.up(x))

    for dtype, atol in ((torch.float32, 1e-5), (torch.bfloat16, 3e-2)):
        for ours, theirs in ((norm, plain_norm), (lambda x, _: mlp(x), plain_mlp)):
            results = []
            for fn in (ours, theirs):
                leaves = [t.clone().requires_grad_() for t in (x, gain)]
                mlp.zero_grad()
                with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                    out = fn(*leaves)
                out.float().square().sum().backward()
                grads = [t.grad for t in leaves] + [p.grad for p in mlp.parameters()]
                results.append([out.float(), *(g for g in grads if g is not None)])
            for a, b in zip(*results, strict=True):
                assert a.dtype == b.dtype
                assert torch.allclose(a.float(), b.float(), atol=atol, rtol=atol), (dtype, fn)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("wanted", ["both", "input", "gain"])
def test_the_norms_backward_in_each_dtype_and_for_either_input(
    dtype: torch.dtype, wanted: str
) -> None:
    """RMSNorm's two backward paths (fp32: LayerNorm's fused kernel plus RMSNorm's own term;
    other dtypes: the formula in tensor ops) against float64 autograd, for the gradients of
    the input, the gain, or both."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 6, 16, generator=g).to(dtype)
    gain = (torch.randn(16, generator=g) + 1).to(dtype)  # off 1: mean(grad * gain) matters
    up = torch.randn(2, 6, 16, generator=g).to(dtype)  # the incoming gradient
    leaves = [
        x.clone().requires_grad_(wanted != "gain"),
        gain.clone().requires_grad_(wanted != "input"),
    ]
    _RMSNormFunction.apply(*leaves, 1e-5).backward(up)
    wide = [t.detach().double().requires_grad_(t.requires_grad) for t in leaves]
    x64, gain64 = wide
    (x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-5) * gain64).backward(up.double())
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    for ours, exact in zip(leaves, wide, strict=True):
        if not ours.requires_grad:
            continue
        assert ours.grad is not None and ours.grad.dtype == dtype
        scale = exact.grad.abs().max()
        assert (ours.grad.double() - exact.grad).abs().max() <= tol * scale, (dtype, wanted)


@pytest.mark.parametrize("adapters", [False, True])
def test_a_block_keeps_neither_normed_inputs_nor_the_mlp_product(adapters: bool) -> None:
    """The normed inputs and silu(gate) * up are made again in backward, not kept, for plain
    layers and for LoRA's (whose A keeps its input), and the gradients are the very ones of
    a model that keeps them (any outer saved-tensor hooks turn the recomputation off)."""
    idx = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(6))
    grads = []
    for keep_all in (False, True):
        model = tiny().train()
        if adapters:
            LoRA(4, 8, 0.0, "all-linear").convert(model)
            for layer in lora_layers(model).values():  # B off zero: the adapters matter
                nn.init.normal_(layer.lora_b.weight)
        watched: dict[str, list[weakref.ref[torch.Tensor]]] = {
            "normed": [],
            "product": [],
            "gate, up": [],
        }

        def output(into: list[weakref.ref[torch.Tensor]]) -> Any:
            return lambda m, i, out: into.append(weakref.ref(out))

        for block in model.blocks:
            for norm in (block.norm1, block.norm2):
                norm.register_forward_hook(output(watched["normed"]))
            for layer in (block.mlp.gate, block.mlp.up):
                layer.register_forward_hook(output(watched["gate, up"]))
            block.mlp.down.register_forward_pre_hook(
                lambda m, i, into=watched["product"]: into.append(weakref.ref(i[0]))
            )
        with contextlib.ExitStack() as stack:
            if keep_all:
                stack.enter_context(torch.autograd.graph.saved_tensors_hooks(id_, id_))
            loss = model(idx, targets=idx)
        alive = {name: sum(ref() is not None for ref in refs) for name, refs in watched.items()}
        if not keep_all:
            assert alive == {"normed": 0, "product": 0, "gate, up": 2 * len(model.blocks)}
        else:
            assert alive["normed"] == 2 * len(model.blocks) and alive["product"] > 0
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])


def id_(t: torch.Tensor) -> torch.Tensor:
    return t


class _Calls(TorchDispatchMode):
    """Counts the calls of the aten op `func` whose output is a tensor of `shape` and
    `dtype`."""

    def __init__(self, func: Any, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        super().__init__()
        self.func, self.shape, self.dtype, self.count = func, shape, dtype, 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func is self.func and out.dtype == self.dtype:
            self.count += tuple(out.shape) == self.shape
        return out


@pytest.mark.parametrize("adapters", [False, True])
def test_backward_makes_silu_gate_once_a_block(adapters: bool) -> None:
    """down's backward and the product's both need silu(gate): the first one made hands it
    on, so a block's backward runs silu once."""
    model = tiny().train()
    if adapters:
        LoRA(4, 8, 0.0, "all-linear").convert(model)
    idx = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(6))
    loss = model(idx, targets=idx)
    silu = _Calls(torch.ops.aten.silu.default, (2, 24, model.config.mlp_width), torch.float32)
    with silu:
        loss.backward()
    assert silu.count == len(model.blocks)


@pytest.mark.parametrize("adapters", [False, True])
def test_under_autocast_a_blocks_normed_inputs_are_cast_once(adapters: bool) -> None:
    """q, k and v (gate and up) read one bf16 copy of their normed input, for plain layers
    and LoRA's alike: not a copy each, as autocast's own casts would make (and keep)."""
    model = tiny().train()
    if adapters:
        LoRA(4, 8, 0.0, "all-linear", "bf16").convert(model)
    idx = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(6))
    casts = _Calls(torch.ops.aten._to_copy.default, (2, 24, model.config.n_embd), torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with casts:
            loss = model(idx, targets=idx)
        assert casts.count == 2 * len(model.blocks)
        loss.backward()  # the recipes make the casts again


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
