"""Generation: the GPT's key/value cache, sampling (top-k, top-p), and streaming text."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hone.config import ModelConfig, load_config
from hone.data.text.tokenizers import ByteTokenizer, CharTokenizer
from hone.engine.inference import LoadedRun, shown_length
from hone.engine.precision import Precision
from hone.engine.tasks import TASKS
from hone.errors import ConfigError
from hone.models import ModelSpec, build_model
from hone.models.generate import generate, iter_tokens, sample_next
from hone.models.gpt import GPT
from tests.conftest import run_hone

VOCAB = 17


def tiny(vocab_size: int = VOCAB, **overrides: object) -> GPT:
    cfg = ModelConfig(name="gpt", n_layer=2, n_head=2, n_embd=16, block_size=12)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    spec = ModelSpec("lm", (cfg.block_size,), vocab_size, vocab_size=vocab_size)
    model = build_model(cfg, spec)
    assert isinstance(model, GPT)
    return model


class Recompute(nn.Module):
    """The same model without `new_kv_cache`: generation recomputes the whole context."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model, self.block_size = model, model.block_size

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)


def reference_generate(
    model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float,
    top_k: int | None, generator: torch.Generator,
) -> torch.Tensor:  # fmt: skip
    """hone.models.generate.generate as it was before the cache: the draws must not change."""
    model.eval()
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(idx[:, -model.block_size :])[:, -1, :].float()  # type: ignore[operator]
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.size(-1):
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                next_id = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
            idx = torch.cat([idx, next_id], dim=1)
    return idx


# ----------------------------------------------------------------- the cache
@pytest.mark.parametrize("attn", ["plain", "sdpa"])
@pytest.mark.parametrize("pos", ["learned", "rope"])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_cached_decoding_gives_the_full_forwards_logits(attn: str, pos: str, qk_norm: bool) -> None:
    torch.manual_seed(0)
    model = tiny(attn=attn, pos=pos, qk_norm=qk_norm).eval()
    idx = torch.randint(0, VOCAB, (2, 12))
    cache = model.new_kv_cache()
    with torch.no_grad():
        full = model(idx)
        # a prompt, a chunk after cached tokens (its own causal mask), then one token at a time
        pieces = [model(idx[:, :5], cache=cache), model(idx[:, 5:8], cache=cache)]
        pieces += [model(idx[:, t : t + 1], cache=cache) for t in range(8, 12)]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)
    cache.reset()  # a reset cache starts a new sequence at position 0
    with torch.no_grad():
        torch.testing.assert_close(model(idx[:, :7], cache=cache), full[:, :7], atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # RMSNorm, unfused
def test_the_cache_takes_the_dtype_autocast_computes_in() -> None:
    torch.manual_seed(0)
    model = tiny(attn="sdpa", pos="rope", qk_norm=True, norm="rmsnorm")
    prompt = torch.tensor([[1, 2, 3]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = generate(model, prompt, 20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 23) and int(out.max()) < VOCAB


@pytest.mark.parametrize("pos", ["learned", "rope"])
@pytest.mark.parametrize(
    "sampling",
    [{"temperature": 0.0}, {}, {"top_k": 5}, {"temperature": 0.7, "top_p": 0.8}],
    ids=["greedy", "t1", "top_k", "top_p"],
)
def test_cached_and_recomputed_generation_agree_within_block_size(
    pos: str, sampling: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    model = tiny(pos=pos)
    prompt = torch.tensor([[1, 2, 3]])
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        cached = generate(model, prompt, 9, generator=g, **sampling)
        g = torch.Generator().manual_seed(seed)
        recomputed = generate(Recompute(model), prompt, 9, generator=g, **sampling)
        assert cached.shape == (1, 12) and torch.equal(cached, recomputed)
        g = torch.Generator().manual_seed(seed)
        streamed = list(iter_tokens(model, prompt, 9, generator=g, **sampling))
        assert streamed == cached[0, 3:].tolist()


def test_sampling_draws_what_it_drew_before_the_cache() -> None:
    torch.manual_seed(0)
    model = tiny()
    prompt = torch.tensor([[4, 5]])
    for temperature, top_k in ((1.0, None), (0.8, 4), (0.0, None)):
        new = generate(model, prompt, 10, temperature, top_k, torch.Generator().manual_seed(7))
        g = torch.Generator().manual_seed(7)
        assert torch.equal(new, reference_generate(model, prompt, 10, temperature, top_k, g))
    # past block_size, a model without a cache still slides its window by one token
    g = torch.Generator().manual_seed(7)
    recomputed = generate(Recompute(model), prompt, 30, generator=g)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(recomputed, reference_generate(model, prompt, 30, 1.0, None, g))


def test_generation_past_block_size_keeps_the_text_going() -> None:
    """A GPT that learned a repeating line continues it greedily far past its 16-token block:
    each context shift re-runs the last 8 tokens, which still place it in the line."""
    torch.manual_seed(0)
    line = "the quick brown fox "
    chars = sorted(set(line))
    text = [chars.index(c) for c in line * 4]
    windows = torch.tensor([text[i : i + 17] for i in range(len(line))])  # (20, 17)
    model = tiny(len(chars), n_layer=1, n_embd=32, block_size=16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        logits = model(windows[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    prompt = torch.tensor([text[:5]])
    out = generate(model, prompt, 60, temperature=0)
    assert "".join(chars[i] for i in out[0].tolist()) == (line * 4)[:65]
    assert torch.equal(out[:, :16], generate(Recompute(model), prompt, 11, temperature=0))


# ----------------------------------------------------------------- sampling
def test_top_p_keeps_the_smallest_nucleus() -> None:
    logits = torch.tensor([0.6, 0.3, 0.1]).log().expand(400, 3)  # 400 draws at once

    def draws(top_p: float | None, seed: int = 0) -> set[int]:
        g = torch.Generator().manual_seed(seed)
        return set(sample_next(logits, top_p=top_p, generator=g).flatten().tolist())

    assert draws(0.5) == {0}  # 0.6 alone reaches 0.5
    assert draws(1e-6) == {0}  # never fewer than the top token
    assert draws(5e-324) == {0}  # ... also below float32's smallest number (0 as float32)
    assert draws(0.8) == {0, 1}  # 0.6 does not reach 0.8; 0.6 + 0.3 does
    assert draws(None) == draws(1.0) == {0, 1, 2}
    # the top-k cut comes first: top_p then works on the renormalized [2/3, 1/3]
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, top_k=2, top_p=0.7, generator=g).flatten().tolist()) == {0, 1}


def test_a_tiny_temperature_is_greedy_not_nan() -> None:
    """logits / 1e-300 overflows to inf (inf - inf: NaN probabilities); the shifted scores do not."""
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 0.25]])
    g = torch.Generator().manual_seed(0)
    for temperature in (1e-300, 1e-30):
        assert sample_next(logits, temperature, generator=g).flatten().tolist() == [1, 0]


def test_top_p_renormalizes_the_nucleus() -> None:
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().expand(4000, 4)
    g = torch.Generator().manual_seed(0)
    drawn = sample_next(logits, top_p=0.75, generator=g).flatten()
    share = (drawn == 0).float().mean().item()
    assert set(drawn.tolist()) == {0, 1} and math.isclose(share, 0.5 / 0.8, abs_tol=0.03)


# ----------------------------------------------------------------- text
def lm_run(
    model: GPT | Scripted, tokenizer: CharTokenizer | ByteTokenizer, precision: str
) -> LoadedRun:
    """A LoadedRun around `model`, as `LoadedRun.load` would give it, without a run folder."""
    vocab_size = tokenizer.vocab_size
    spec = ModelSpec("lm", (model.block_size,), vocab_size, vocab_size=vocab_size)
    cfg = load_config(None, ["train.max_steps=1"])
    return LoadedRun(
        cfg, TASKS.get("lm"), spec, model, Precision(precision, torch.device("cpu")), tokenizer
    )


def char_run(precision: str = "fp32", **overrides: object) -> LoadedRun:
    tokenizer = CharTokenizer.train("abcdefgh ,.\n")
    return lm_run(tiny(tokenizer.vocab_size, **overrides).eval(), tokenizer, precision)


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # RMSNorm, unfused
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_stream_adds_up_to_the_sample(precision: str) -> None:
    torch.manual_seed(0)
    run = char_run(precision, pos="rope", qk_norm=True)
    for seed in range(3):
        pieces = list(run.stream("abc", 30, seed=seed, top_p=0.9))
        assert len(pieces) > 1 and "".join(pieces) == run.sample("abc", 30, seed=seed, top_p=0.9)
        completion = run.complete("abc", 30, seed=seed, top_p=0.9)
        assert completion.text == "".join(pieces) and completion.finish_reason == "length"
        assert (completion.prompt_tokens, completion.completion_tokens) == (3, 30)


def test_a_stop_string_ends_the_text_before_it() -> None:
    torch.manual_seed(0)
    run = char_run()
    full = run.sample("a", 40, seed=1)
    stop = full[10:12]  # two characters the text holds
    where = full.find(stop)
    run.model.train()
    stream = run.stream("a", 40, seed=1, stop=["zz", stop])
    pieces = list(stream)
    assert "".join(pieces) == full[:where] == run.sample("a", 40, seed=1, stop=[stop])
    assert stream.completion is not None and stream.completion.finish_reason == "stop"
    assert stream.completion.completion_tokens == where + len(stop)  # one token per character
    assert run.model.training  # stopping early still restores the model's mode
    assert run.complete("a", 40, seed=1, stop=["never there"]).text == full


class Scripted(nn.Module):
    """A language model that greedily writes `script` after a one-token prompt."""

    def __init__(self, script: list[int], vocab_size: int) -> None:
        super().__init__()
        self.script, self.vocab_size, self.block_size = script, vocab_size, 1000

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(idx.size(0), idx.size(1), self.vocab_size)
        logits[:, -1, self.script[idx.size(1) - 1]] = 1.0
        return logits


def scripted_run(text: str) -> LoadedRun:
    return lm_run(Scripted(list(text.encode()), 256), ByteTokenizer(), "fp32")


def test_streamed_bytes_never_split_a_character() -> None:
    text = "né € 😀!"
    run = scripted_run(text)
    pieces = list(run.stream(">", len(text.encode()), temperature=0))
    assert "".join(pieces) == text and all("\ufffd" not in p for p in pieces)
    assert pieces[:2] == ["n", "é"]  # emitted as soon as each character is whole
    # a character cut by max_new_tokens shows as U+FFFD, in the stream as in the sample
    cut = run.complete(">", 5, temperature=0)  # n, é (2 bytes), space, 1 of 3 bytes of €
    assert "".join(run.stream(">", 5, temperature=0)) == cut.text == "né \ufffd"


def test_the_start_of_a_stop_string_is_held_back_until_it_is_decided() -> None:
    run = scripted_run("abXYcd, tail")
    stream = run.stream(">", 12, temperature=0, stop=["XYZ", ", t"])
    seen = []
    for piece in stream:
        seen.append(piece)
    assert seen == ["a", "b", "XYc", "d"]
    assert stream.completion is not None and stream.completion.finish_reason == "stop"
    assert stream.completion.completion_tokens == 9
    assert shown_length("ab\ufffd", ["bc"]) == 1  # a stop may begin before a partial character


def test_bad_sampling_arguments_name_the_fix() -> None:
    run = char_run()
    with pytest.raises(ConfigError, match="top_p must be in"):
        run.stream("a", 5, top_p=1.5)
    with pytest.raises(ConfigError, match="stop strings must not be empty"):
        run.stream("a", 5, stop=[""])
    result = run_hone("sample", "no-such-run", "--top-p", "0")
    assert result.returncode == 2 and "--top-p must be in (0, 1]" in result.stderr


def test_the_cache_takes_what_a_generation_needs_not_the_whole_block() -> None:
    model = tiny(block_size=64)
    made = []
    new_kv_cache = model.new_kv_cache

    def spy(max_length: int = 0) -> Any:
        made.append(new_kv_cache(max_length))
        return made[-1]

    model.new_kv_cache = spy  # type: ignore[method-assign]
    generate(model, torch.zeros(1, 3, dtype=torch.long), 5, temperature=0)
    assert made[0].max_length == 8 and made[0].keys[0].size(2) == 8  # prompt + new tokens
    generate(model, torch.zeros(1, 3, dtype=torch.long), 100, temperature=0)
    assert made[1].max_length == 64  # capped at block_size: the context shifts past it
