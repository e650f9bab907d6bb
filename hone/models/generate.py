"""Autoregressive sampling from a language model that maps (B, T) ids to (B, T, V) logits."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend idx (B, T) by `max_new_tokens` sampled tokens: returns (B, T + max_new_tokens).

    The context is cropped to the model's `block_size`. `temperature = 0` picks the most
    likely token (greedy); otherwise logits are divided by the temperature, optionally cut to
    the `top_k` most likely, and sampled with `generator`, so a seeded generator gives the
    same text every time. The model is put in eval mode and restored afterwards.
    """
    assert temperature >= 0, temperature
    block_size = getattr(model, "block_size", idx.size(1) + max_new_tokens)
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            context = idx[:, -block_size:]  # (B, <= block_size)
            logits = model(context)[:, -1, :].float()  # (B, V), the next token's scores
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.size(-1):
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = logits.softmax(dim=-1)
                if generator is not None:  # a generator samples on its own device
                    probs = probs.to(generator.device)
                next_id = torch.multinomial(probs, 1, generator=generator).to(idx.device)
            idx = torch.cat([idx, next_id], dim=1)
    finally:
        model.train(was_training)
    return idx
