"""Autoregressive sampling from a language model that maps (B, T) ids to (B, T, V) logits.

`generate` returns the extended ids; `iter_tokens` yields each new id as soon as it is drawn.
Both run one loop (`_next_ids`), so a seeded generator gives them the same tokens. Given
`stop_ids` (a pretrained tokenizer's `eos_ids`), a sequence ends with the first one it draws.
A model with `new_kv_cache()` (hone.models.gpt.GPT) decodes incrementally through its
key/value cache; any other (a custom model, hone.engine.backends.OnnxModule) recomputes its
whole context at every step.
"""

from __future__ import annotations

from collections.abc import Collection, Generator
from contextlib import closing

import torch
from torch import nn


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token ids (B, 1) drawn from `logits` (B, V), the next token's scores.

    `temperature = 0` picks the most likely token (greedy, no random draw); otherwise logits
    are divided by the temperature, cut to the `top_k` most likely, then to the nucleus of
    `top_p` (the fewest likeliest tokens whose probabilities add up to at least top_p, never
    fewer than one), and one token is drawn with `generator`: one `torch.multinomial` call per
    step, so a seeded generator repeats itself.
    """
    assert temperature >= 0, temperature
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = sampling_probs(logits, temperature, top_k, top_p)
    if generator is not None:  # a generator samples on its own device
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, generator=generator).to(logits.device)


def sampling_probs(
    logits: torch.Tensor, temperature: float, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """The probabilities (B, V) that `sample_next` draws from, for temperature > 0; row by
    row, so a server draws each row of a batch with its request's own generator."""
    # A temperature below float32's smallest normal number would be divided by as 0.
    temperature = max(temperature, torch.finfo(logits.dtype).tiny)
    scaled = logits / temperature
    if not torch.isfinite(scaled).all():  # a tiny temperature overflowed:
        # softmax is the same after subtracting the largest score, which then cannot overflow
        scaled = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    logits = scaled
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    if top_p is not None and top_p < 1:
        assert top_p > 0, top_p
        sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V) each
        # A token is dropped when the likelier ones already hold top_p: the top one never is.
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        drop_sorted = mass_before >= top_p
        drop_sorted[:, 0] = False  # also when top_p is below float32's smallest number
        drop = torch.empty_like(probs, dtype=torch.bool).scatter_(-1, order, drop_sorted)
        probs = logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
    return probs


@torch.no_grad()
def _next_ids(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
    stop_ids: Collection[int] = (),
) -> Generator[torch.Tensor, None, None]:
    """Each step's new ids (B, 1), in eval mode (the model's mode is restored when the
    iteration ends or is closed).

    A row that draws one of `stop_ids` has finished: it repeats that id at every later step
    (its own draws are thrown away), and the loop ends after the step where the last row
    finished. Finished rows still run through the model and draw, so the rows that go on get
    the very tokens they would get without `stop_ids`.

    The model sees at most `block_size` tokens. Without a cache, each step runs the last
    block_size tokens (a window sliding by one). With a cache, a window cannot slide: every
    cached key depends on its token's position and on the tokens it attended to, so dropping
    the oldest token invalidates them all and sliding exactly would mean recomputing the
    window at every step, the cost the cache exists to avoid. So when the cache is full, the
    last half window is run again as a fresh prompt (llama.cpp's context shift, but recomputed,
    so it is exact for learned positions too) and decoding continues from it: one half-window
    forward every half window, and the model still sees block_size / 2 to block_size tokens,
    context lengths it was trained on (a training window's token t sees t + 1 tokens). Within
    block_size both paths run the same contexts, so they draw the same tokens.
    """
    block_size: int = getattr(model, "block_size", idx.size(1) + max_new_tokens)
    new_kv_cache = getattr(model, "new_kv_cache", None)
    # A cache as long as this generation can get (the last token drawn is never run)
    need = idx.size(1) + max_new_tokens
    cache = new_kv_cache(min(need, block_size)) if new_kv_cache is not None else None
    seen = 0  # tokens of idx the cache holds up to (the cache holds the last cache.length)
    stop = torch.tensor(sorted(stop_ids), dtype=torch.long, device=idx.device)
    finished = torch.zeros(idx.size(0), 1, dtype=torch.bool, device=idx.device)  # (B, 1)
    stopping = len(stop) > 0  # without stop ids, no per-step device-to-host sync
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            if cache is None:
                logits = model(idx[:, -block_size:])  # (B, <= block_size, V)
            else:
                new = idx[:, seen:]  # (B, T): the prompt, then the last token drawn
                if cache.length + new.size(1) > block_size:
                    keep = max(1, block_size // 2) if cache.length else block_size
                    cache.reset()
                    new = idx[:, -keep:]
                logits = model(new, cache=cache)
                seen = idx.size(1)
            next_id = sample_next(logits[:, -1, :].float(), temperature, top_k, top_p, generator)
            if stopping:
                next_id = torch.where(finished, idx[:, -1:], next_id)  # (B, 1)
                finished |= torch.isin(next_id, stop)
            yield next_id
            if stopping and bool(finished.all()):
                return
            idx = torch.cat([idx, next_id], dim=1)
    finally:
        model.train(was_training)


def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    top_p: float | None = None,
    stop_ids: Collection[int] = (),
) -> torch.Tensor:
    """Extend idx (B, T) by `max_new_tokens` sampled tokens: returns (B, T + max_new_tokens),
    or fewer once every row has drawn one of `stop_ids` (a finished row repeats its stop id
    up to the end of the batch's longest row).

    Sampling as in `sample_next`; the context and stopping as in `_next_ids` (cropped to the
    model's `block_size`). The model is put in eval mode and restored afterwards.
    """
    steps = _next_ids(model, idx, max_new_tokens, temperature, top_k, top_p, generator, stop_ids)
    return torch.cat([idx, *steps], dim=1)


def iter_tokens(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    stop_ids: Collection[int] = (),
) -> Generator[int, None, None]:
    """The ids `generate` would add to idx (1, T), each yielded as soon as it is drawn; a
    stop id drawn is yielded, and is the last.

    Stopping early is allowed; close the iterator (or let it be collected) to put the model
    back in its mode.
    """
    assert idx.size(0) == 1, f"iter_tokens samples one sequence, got a batch of {idx.size(0)}"
    steps = _next_ids(model, idx, max_new_tokens, temperature, top_k, top_p, generator, stop_ids)
    with closing(steps):  # closing this iterator early closes the loop, which restores the mode
        for next_id in steps:
            yield int(next_id)
