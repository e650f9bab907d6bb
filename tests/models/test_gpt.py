"""The GPT: causality, kernel equivalence, init, learning, sampling and bf16 on the CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hone.config import ModelConfig
from hone.errors import ConfigError
from hone.finetune.lora import LoRA
from hone.models import MODELS, ModelSpec, build_model, few_rows, gpt_decode
from hone.models.generate import generate
from hone.models.gpt import GPT
from hone.models.slot_cache import SlotCache

VOCAB = 17


def tiny(**overrides: object) -> GPT:
    cfg = ModelConfig(name="gpt", n_layer=2, n_head=2, n_embd=16, block_size=12)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    model = build_model(cfg, ModelSpec("lm", (cfg.block_size,), VOCAB, vocab_size=VOCAB))
    assert isinstance(model, GPT)
    return model


@pytest.mark.parametrize("attn", ["plain", "sdpa"])
@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_changing_later_tokens_never_changes_earlier_logits(attn: str, pos: str) -> None:
    torch.manual_seed(0)
    model = tiny(attn=attn, pos=pos, qk_norm=pos == "rope").eval()
    idx = torch.randint(0, VOCAB, (3, 12))
    logits = model(idx)
    for t in (0, 5, 10):
        changed = idx.clone()
        changed[:, t + 1 :] = torch.randint(0, VOCAB, (3, 11 - t))
        other = model(changed)
        assert torch.equal(other[:, : t + 1], logits[:, : t + 1])
        assert not torch.allclose(other[:, t + 1 :], logits[:, t + 1 :])


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_sdpa_and_plain_attention_agree(pos: str) -> None:
    torch.manual_seed(0)
    plain = tiny(attn="plain", pos=pos, dropout=0.0).eval()
    sdpa = tiny(attn="sdpa", pos=pos).eval()
    sdpa.load_state_dict(plain.state_dict())
    idx = torch.randint(0, VOCAB, (4, 12))
    torch.testing.assert_close(sdpa(idx), plain(idx), atol=1e-5, rtol=0)


def test_gpt2_init_and_weight_tying() -> None:
    torch.manual_seed(0)
    model = tiny(n_layer=4, n_embd=64, n_head=4)
    assert model.lm_head.weight is model.token_embedding.weight
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    residual_std = 0.02 / math.sqrt(2 * 4)
    assert model.blocks[0].mlp.proj.weight.std().item() == pytest.approx(residual_std, rel=0.1)
    assert torch.all(model.blocks[0].attn.qkv.bias == 0)
    zero = tiny(zero_init_proj=True, tie_embeddings=False)
    assert torch.all(zero.blocks[1].attn.proj.weight == 0) and torch.all(
        zero.blocks[1].mlp.proj.weight == 0
    )
    assert zero.lm_head.weight is not zero.token_embedding.weight


def test_options_build_the_named_layers() -> None:
    model = tiny(norm="rmsnorm", bias=False, mlp="relu2", pos="rope", qk_norm=True)
    assert isinstance(model.norm, torch.nn.RMSNorm) and model.pos_embedding is None
    assert model.blocks[0].attn.qkv.bias is None
    assert isinstance(model.blocks[0].attn.q_norm, torch.nn.RMSNorm)
    assert tiny(norm="layernorm", bias=False).norm.bias is None
    assert model(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, VOCAB)


def test_a_tiny_gpt_memorizes_a_short_text() -> None:
    torch.manual_seed(0)
    text = "to be, or not to be, that is the question: whether 'tis nobler in the mind"
    chars = sorted(set(text))
    ids = torch.tensor([[chars.index(c) for c in text]])  # (1, 74)
    T = ids.size(1) - 1
    cfg = ModelConfig(name="gpt", n_layer=1, n_head=2, n_embd=32, block_size=T)
    model = MODELS.get("gpt")(cfg, ModelSpec("lm", (T,), len(chars), vocab_size=len(chars)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[0, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 2.5  # about ln(25): uniform over the characters
    assert losses[-1] < 0.1


def test_generate_is_reproducible_and_greedy_is_deterministic() -> None:
    torch.manual_seed(0)
    model = tiny()
    prompt = torch.tensor([[1, 2, 3]])

    def sample(seed: int, **kwargs: object) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return generate(model, prompt, 20, generator=g, **kwargs)  # type: ignore[arg-type]

    out = sample(1)
    assert out.shape == (1, 23) and torch.equal(out[:, :3], prompt)  # 23 > block_size: cropped
    assert torch.equal(out, sample(1)) and not torch.equal(out, sample(2))
    assert torch.equal(sample(1, temperature=0), sample(2, temperature=0))
    top1 = sample(3, top_k=1)
    assert torch.equal(top1, sample(1, temperature=0))  # top-1 sampling is greedy
    assert model.training  # restored after sampling


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # RMSNorm, unfused
@pytest.mark.parametrize(
    "options",
    [{"attn": "auto"}, {"attn": "plain", "pos": "rope", "qk_norm": True, "norm": "rmsnorm"}],
)
def test_bf16_autocast_forward_backward_on_cpu(options: dict[str, object]) -> None:
    torch.manual_seed(0)
    model = tiny(**options)
    idx = torch.randint(0, VOCAB, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(idx)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), idx.flatten())
    assert logits.dtype == torch.bfloat16
    loss.backward()
    assert math.isfinite(loss.item()) and all(p.grad is not None for p in model.parameters())


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = tiny(dropout=0.0)
    idx = torch.randint(0, VOCAB, (2, 12))

    def grads() -> list[torch.Tensor]:
        model.zero_grad()
        F.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
        return [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]

    plain = grads()
    model.activation_checkpointing = True
    for a, b in zip(plain, grads(), strict=True):
        torch.testing.assert_close(a, b)


def test_builder_errors_name_the_flag() -> None:
    cfg = ModelConfig(name="gpt", vocab_size=10)
    with pytest.raises(ConfigError, match="model.vocab_size=0"):
        MODELS.get("gpt")(cfg, ModelSpec("lm", (64,), 65, vocab_size=65))
    with pytest.raises(ConfigError, match="data.name=shakespeare"):
        MODELS.get("gpt")(ModelConfig(name="gpt"), ModelSpec("classification", (4,), 3))
    larger = MODELS.get("gpt")(
        ModelConfig(name="gpt", vocab_size=80), ModelSpec("lm", (64,), 65, vocab_size=65)
    )
    assert larger.lm_head.out_features == 80


@pytest.mark.parametrize(
    "options",
    [
        {"pos": "learned", "norm": "layernorm", "mlp": "gelu_tanh", "bias": True},  # GPT-2's
        {"pos": "rope", "norm": "rmsnorm", "mlp": "relu2", "qk_norm": True, "bias": False},
        {"pos": "learned", "bias": True, "lora": True},  # adapters on every linear layer
    ],
)
def test_the_lean_decode_step_gives_the_general_paths_logits(
    options: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain cache, and a slot cache whose rows sit at positions of their own: to the bit
    with F.linear's products, to rounding with the weights split in halves (few_rows)."""
    torch.manual_seed(0)
    options = dict(options)  # the parameter's own dict stays as pytest made it
    lora = options.pop("lora", False)
    model = tiny(n_embd=32, n_head=4, block_size=16, **options).eval()
    if lora:
        LoRA(4, 8, 0.0, "all-linear").convert(model)
    with torch.no_grad():  # biases, gains and LoRA's B off their 0 and 1, so that they matter
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    idx = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(3))
    lean_steps = []
    decode_token = gpt_decode.decode_token

    def counted(*args: object) -> torch.Tensor:
        lean_steps.append(1)
        return decode_token(*args)  # type: ignore[arg-type]

    def decode() -> torch.Tensor:
        cache = model.new_kv_cache()
        slots = SlotCache(len(model.blocks), 3, 16)
        with torch.no_grad():
            steps = [model(idx[:, :4], cache)]  # the prompt: the general path
            steps += [model(idx[:, t : t + 1], cache) for t in range(4, 10)]
            for slot, length in ((2, 3), (0, 6)):  # prompts of two lengths, slots out of order
                slots.select([slot], length, idx.device)
                model(idx[:1, :length], slots)
            for t in range(3):
                slots.select([2, 0], 1, idx.device)
                steps.append(model(idx[:, t : t + 1], slots))
        return torch.cat(steps, dim=1)

    monkeypatch.setattr(gpt_decode, "decode_token", counted)
    monkeypatch.setattr(few_rows, "_CHOSEN", {})
    monkeypatch.setattr(few_rows, "fastest", lambda rows, group: few_rows.plain)
    lean = decode()
    assert len(lean_steps) == 9
    monkeypatch.setattr(few_rows, "_CHOSEN", {})
    monkeypatch.setattr(few_rows, "fastest", lambda rows, group: few_rows.split)
    split = decode()
    monkeypatch.setattr(gpt_decode, "lean_decodable", lambda *args: False)
    general = decode()
    assert len(lean_steps) == 18
    assert torch.equal(lean, general)
    assert not torch.equal(split, general) and torch.allclose(split, general, atol=1e-5)
    monkeypatch.undo()  # what the lean step leaves to the general path
    token, cache = idx[:, :1], model.new_kv_cache()
    with torch.no_grad():
        assert gpt_decode.lean_decodable(model, token, cache)
        assert not gpt_decode.lean_decodable(tiny(attn="plain"), token, cache)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not gpt_decode.lean_decodable(model, token, cache)
    assert not gpt_decode.lean_decodable(model, token, cache)  # gradients
