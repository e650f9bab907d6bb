"""One decoding step of a Llama: the next token's logits from the tokens a cache holds, with
the general forward's very ops, less its modules and bookkeeping.

Decoding at batch 1 runs every layer on one token: the matmuls then stream the weights, and
the ops around them cost a few microseconds of dispatch each whatever their size.
`Llama.forward` pays for generality there: a module call per layer, the (B, T, ...) views
and transposes, the autocast and recompute checks, the mask logic of chunks and packed rows.
`decode_token` runs the same arithmetic on (B, C) rows and calls the functions the modules
would. SmolLM2-135M, one token in fp32: 1,731 aten ops reach the kernels instead of the
general path's 2,211, and far fewer Python calls (BENCHMARKS.md). Its products go through
hone.models.few_rows, which may split a weight to read it at the memory's speed: that only
rounds differently, and with F.linear's products the logits are the general path's to the
bit (tests/models/test_llama.py).

It takes plain layers and LoRA layers (whose frozen weight's product it hands them):
`lean_decodable` sends other converted models (int8), the plain attention kernel, dropout
in training mode and gradients to the general path. It decodes hone serve's batches too
(a slot cache, whose rows may sit at positions of their own): there a step multiplies a few
rows by each weight, which hone.models.few_rows speeds up as it does one row's.

Shapes in comments as in hone.models.llama: B batch, C channels, H query heads, G key/value
heads, D head width, F the MLP's width, V vocabulary, S the tokens the cache holds.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from hone.models import few_rows
from hone.models.gpt import KVCache
from hone.models.gpt_decode import one_plain_token
from hone.models.llama import Block, Llama, RMSNorm, rms_norm, rope_tables, rotate_half
from hone.models.slot_cache import SlotCache


def lean_decodable(model: Llama, idx: torch.Tensor, cache: KVCache | SlotCache | None) -> bool:
    """Whether `decode_token` computes what `model(idx, cache)` would."""
    if not one_plain_token(model, idx, cache):
        return False
    for block in cast(list[Block], list(model.blocks)):
        if not all(map(few_rows.decodes_rows, decoded_layers(block))):
            return False
        if type(block.norm1) is not RMSNorm or type(block.norm2) is not RMSNorm:
            return False
        if any(
            type(norm) not in (RMSNorm, nn.Identity)
            for norm in (block.attn.q_norm, block.attn.k_norm)
        ):
            return False
    return type(model.lm_head) is nn.Linear and type(model.norm) is RMSNorm


def decode_token(model: Llama, idx: torch.Tensor, cache: KVCache | SlotCache) -> torch.Tensor:
    """Logits (B, 1, V) of idx (B, 1), the token after those the cache holds (`cache.length`,
    or each slot's own); its keys and values are added to the cache. For a model
    `lean_decodable` accepts."""
    B = idx.size(0)
    # A slot cache's rows may each sit at a position of their own, and see keys of their own
    positions, mask = cache.placement(1)  # (B, 1), (B, 1, 1, S); or None, None
    if positions is None:
        # the rotary cos and sin of this one position, as Llama.forward makes them: (2, 1, 1, D)
        start = cache.length
        steps = torch.arange(start, start + 1, device=idx.device, dtype=torch.float32)
        rope = rope_tables(steps[:, None] * model.rope_inv_freq[None, :])
    else:  # each row's own: (2, B, 1, 1, D)
        rope = rope_tables(positions.float()[..., None] * model.rope_inv_freq)
    # Rows of (B, C): a 2-D input's product is one matmul op, a 3-D one's four; each by the
    # kernel few_rows found fastest for its shape (the weights' bandwidth is the step's time)
    linear, product = few_rows.linear, few_rows.layer_product
    if not few_rows.chosen(B, decoded_weights(model, first_block_only=True)):
        few_rows.choose(B, decoded_weights(model))
    x = model.token_embedding(idx[:, 0])  # (B, C)
    rope = rope.to(x.dtype)  # what rotate_half casts it to, once for all layers
    for layer, block in enumerate(cast(list[Block], list(model.blocks))):
        attn, mlp = block.attn, block.mlp
        H, G, D = attn.H, attn.G, attn.D
        h = rms_norm(x, block.norm1.weight, block.norm1.eps)
        q = product(attn.q, h).view(B, 1, H, D)
        k = product(attn.k, h).view(B, 1, G, D)
        v = product(attn.v, h).view(B, G, 1, D)
        if not isinstance(attn.q_norm, nn.Identity):  # Qwen3's per-head norms
            q_norm, k_norm = cast(RMSNorm, attn.q_norm), cast(RMSNorm, attn.k_norm)
            q = rms_norm(q, q_norm.weight, q_norm.eps)
            k = rms_norm(k, k_norm.weight, k_norm.eps)
        # (B, 1, heads, D) -> (B, heads, 1, D): one token, so a view, not a transpose's copy
        q = rotate_half(q, rope).view(B, H, 1, D)
        keys, values = cache.update(layer, rotate_half(k, rope).view(B, G, 1, D), v)
        # (B, G, S, D) each; one new token sees every cached key of its row: the mask, if
        # any, is the padding of rows shorter than others
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=G != H)
        x = x + product(attn.proj, y.view(B, H * D))
        h = rms_norm(x, block.norm2.weight, block.norm2.eps)
        hidden = F.silu(product(mlp.gate, h)) * product(mlp.up, h)  # (B, F)
        x = x + product(mlp.down, hidden)
    cache.advance(1)
    head = model.lm_head
    return linear(rms_norm(x, model.norm.weight, model.norm.eps), head.weight, head.bias)[:, None]


def decoded_layers(block: Block) -> tuple[nn.Module, ...]:
    """A block's linear layers, which `decode_token` multiplies through hone.models.few_rows."""
    attn, mlp = block.attn, block.mlp
    return (attn.q, attn.k, attn.v, attn.proj, mlp.gate, mlp.up, mlp.down)


def decoded_weights(model: Llama, first_block_only: bool = False) -> list[torch.Tensor]:
    """The matrices `decode_token` multiplies: every block's linear layers' and the head's."""
    blocks = cast(list[Block], list(model.blocks))[: 1 if first_block_only else None]
    layers = [layer for block in blocks for layer in decoded_layers(block)]
    return [model.lm_head.weight, *few_rows.weights_of(layers)]
