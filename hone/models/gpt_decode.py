"""One decoding step of hone's GPT (GPT-2 checkpoints, the char and word GPTs): the next
token's logits from the tokens a cache holds, with the general forward's very ops on (B, C)
rows and each weight's product through hone.models.few_rows.

The sibling of hone.models.llama_decode, for the same reason: at a few rows a step the
matmuls stream the weights, and the BLAS's one-row product can read them at a third of the
memory's speed (BENCHMARKS.md). Norms, rotary positions and attention are the modules' and
functions' own calls on the same shapes, so with F.linear's products the logits are the
general path's to the bit (tests/models/test_gpt.py); the split kernel rounds differently.

`lean_decodable` takes LoRA layers too (handing them their frozen weight's product) and sends
other converted models (int8), the plain attention kernel, dropout in training mode,
autocast and gradients to the general path.

Shapes: B rows, C channels, H heads, D head width, S the tokens the cache holds.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from hone.models import few_rows
from hone.models.gpt import GPT, Block, KVCache, RMSNorm, _apply_rope
from hone.models.slot_cache import SlotCache

NORMS = (nn.LayerNorm, RMSNorm)


def one_plain_token(model: nn.Module, idx: torch.Tensor, cache: object) -> bool:
    """What a lean step of either family asks of the call: one token per row on a cache of
    hone's, no gradients or autocast, SDPA, no dropout at work."""
    if cache is None or type(cache) not in (KVCache, SlotCache) or idx.size(1) != 1:
        return False
    if torch.is_grad_enabled() or torch.is_autocast_enabled(idx.device.type):
        return False
    cfg: Any = model.config  # a GPTConfig or a LlamaConfig: both have these fields
    return cfg.attn != "plain" and not (model.training and cfg.dropout > 0)


def lean_decodable(model: GPT, idx: torch.Tensor, cache: KVCache | SlotCache | None) -> bool:
    """Whether `decode_token` computes what `model(idx, cache)` would."""
    if not one_plain_token(model, idx, cache):
        return False
    for block in cast(list[Block], list(model.blocks)):
        if not all(map(few_rows.decodes_rows, decoded_layers(block))):
            return False
        if type(block.norm1) not in NORMS or type(block.norm2) not in NORMS:
            return False
    return type(model.lm_head) is nn.Linear and type(model.norm) in NORMS


def decode_token(model: GPT, idx: torch.Tensor, cache: KVCache | SlotCache) -> torch.Tensor:
    """Logits (B, 1, V) of idx (B, 1), the token after those the cache holds; its keys and
    values are added to the cache. For a model `lean_decodable` accepts."""
    B = idx.size(0)
    start = cache.length
    positions, mask = cache.placement(1)  # (B, 1), (B, 1, 1, S); or None, None
    linear, product = few_rows.linear, few_rows.layer_product
    if not few_rows.chosen(B, decoded_weights(model, first_block_only=True)):
        few_rows.choose(B, decoded_weights(model))
    x = model.token_embedding(idx[:, 0])  # (B, C)
    if model.pos_embedding is not None:  # (1, C) broadcast, or each row's own (B, C)
        at = torch.arange(start, start + 1, device=idx.device) if positions is None else None
        x = x + model.pos_embedding(positions[:, 0] if positions is not None else at)
    for layer, block in enumerate(cast(list[Block], list(model.blocks))):
        attn, mlp = block.attn, block.mlp
        H, D = attn.n_head, attn.head_dim
        qkv = product(attn.qkv, block.norm1(x))  # (B, 3C)
        # (B, 3, H, 1, D): the general path's (3, B, H, T, D) at T = 1, as views
        q, k, v = qkv.view(B, 3, H, 1, D).unbind(1)
        q, k = attn.q_norm(q), attn.k_norm(k)
        if attn.rope is not None:
            rope = attn.rope if positions is None else attn.rope[:, positions].unsqueeze(2)
            q, k = _apply_rope(q, rope, start), _apply_rope(k, rope, start)
        keys, values = cache.update(layer, k, v)  # (B, H, S, D)
        y = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, is_causal=mask is None and not start
        )  # (B, H, 1, D)
        x = x + product(attn.proj, y.reshape(B, H * D))
        h = mlp.activation(product(mlp.fc, block.norm2(x)))  # (B, 4C)
        x = x + product(mlp.proj, h)
    cache.advance(1)
    head = model.lm_head
    return linear(model.norm(x), head.weight, head.bias)[:, None]  # (B, 1, V)


def decoded_layers(block: Block) -> tuple[nn.Module, ...]:
    """A block's linear layers, which `decode_token` multiplies through hone.models.few_rows."""
    return (block.attn.qkv, block.attn.proj, block.mlp.fc, block.mlp.proj)


def decoded_weights(model: GPT, first_block_only: bool = False) -> list[torch.Tensor]:
    """The matrices `decode_token` multiplies: every block's linear layers' and the head's."""
    blocks = cast(list[Block], list(model.blocks))[: 1 if first_block_only else None]
    layers = [layer for block in blocks for layer in decoded_layers(block)]
    return [model.lm_head.weight, *few_rows.weights_of(layers)]
