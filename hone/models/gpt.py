"""A GPT language model in one file: token embedding, pre-norm transformer blocks, LM head.

Shapes in comments: B batch, T time (tokens), C channels (n_embd), H heads, D head width (C / H),
V vocabulary, S the tokens a key/value cache holds. Every choice in the architecture is a
`model.*` key (see GPTConfig); the builder registered as "gpt" turns the config into a module.
`GPT.forward(idx, cache)` with a `KVCache` decodes incrementally (hone.models.generate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from hone.config import ModelConfig, opt, register_model_config
from hone.errors import ConfigError
from hone.models.base import MODELS, ModelSpec, weight_flops
from hone.models.lm_loss import lm_head_loss

# `attn = "auto"` means SDPA on every device. Measured on this project's 2-core AMD EPYC
# (torch 2.13, fp32, one training step = forward + backward + AdamW, the fastest of 22-37
# steps, as the cores were shared with other jobs):
#   baseline shapes (4 layers, 4 heads, 128 wide, block 64, batch 12):
#     1 thread plain 83 ms, sdpa 77 ms; 2 threads plain 55 ms, sdpa 51 ms
#   block 32, batch 12: 1 thread 44 vs 42 ms; 2 threads 29 vs 28 ms
#   block 128, batch 32: 1 thread 568 vs 459 ms;  block 256, batch 16, 192 wide: 1085 vs 869 ms
# SDPA's fused CPU kernel never lost in fp32, even on short contexts, so the masked-softmax
# `plain` kernel is kept as the readable reference (and for bit-for-bit comparisons with it).
# In bf16 it did lose (issue 15, AVX512-BF16 CPU): at block 64 and head width 32 SDPA's flash
# backward took 29% of gpt-shakespeare-speedrun's step and `plain` was 1.4-1.5x faster per
# step, so that recipe sets it. `auto` still means SDPA: one shape on one CPU is too little
# to switch every bf16 run on.


@register_model_config("gpt")
@dataclass
class GPTConfig:
    """`model.*` keys of the GPT."""

    n_layer: int = opt(4, "number of transformer blocks", ge=1)
    n_head: int = opt(4, "attention heads per block", ge=1)
    n_embd: int = opt(128, "embedding width (must divide by n_head)", ge=1)
    block_size: int = opt(64, "context length in tokens", ge=1)
    vocab_size: int = opt(0, "vocabulary size; 0 takes it from the tokenizer", ge=0)
    bias: bool = opt(True, "bias in linear layers and norms")
    norm: str = opt("layernorm", "normalization", choices=["layernorm", "rmsnorm"])
    pos: str = opt("learned", "position encoding", choices=["learned", "rope"])
    mlp: str = opt(
        "gelu",
        "MLP activation; gelu_tanh is GPT-2's tanh approximation",
        choices=["gelu", "gelu_tanh", "relu2"],
    )
    attn: str = opt(
        "auto", "attention kernel; auto picks by device", choices=["auto", "sdpa", "plain"]
    )
    qk_norm: bool = opt(False, "normalize queries and keys per head")
    tie_embeddings: bool = opt(True, "share the token embedding with the LM head")
    zero_init_proj: bool = opt(False, "zero-initialize residual output projections")
    dropout: float = opt(0.0, "dropout probability (embeddings, attention, residual)", ge=0, lt=1)

    @property
    def context_length(self) -> int:
        return self.block_size

    def validate(self) -> None:
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head}); "
                f"set --model.n_head to a divisor of {self.n_embd}"
            )


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm in its input's dtype. Under bf16 autocast a query or key arrives in bf16
    while the gain is fp32, and torch's fused kernel wants both alike: without the cast it
    falls back to a slower unfused path (and warns on every call)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype) if self.weight is not None else None
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


def _norm(cfg: GPTConfig, width: int) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(width)
    return nn.LayerNorm(width, bias=cfg.bias)


def _rope_tables(block_size: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """cos and sin of the rotary angles, stacked: (2, T, D/2).

    Written here because torch has no rotary-embedding op; it is the RoFormer formula
    (angle of pair i at position t is t * base^(-2i/D)).
    """
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (D/2,)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)  # (T, D/2)
    return torch.stack([angles.cos(), angles.sin()])


def _apply_rope(x: torch.Tensor, tables: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Rotate pairs (first half, second half) of each head's channels: x (B, H, T, D) holds
    positions start .. start + T - 1 of `tables` (2, T', D/2); or `tables` (2, B, 1, T, D/2)
    holds each token's own angles (packed examples, whose positions restart)."""
    if tables.dim() == 3:
        tables = tables[:, start : start + x.size(-2)]  # (2, T, D/2)
    cos, sin = tables[0].to(x.dtype), tables[1].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def document_mask(positions: torch.Tensor) -> torch.Tensor:
    """The attention mask of packed rows, several examples one after the other: (B, 1, T, T),
    True where query i may attend key j, i.e. j <= i within the same example. `positions`
    (B, T) restart at 0 where an example starts (hone.finetune.packing)."""
    documents = (positions == 0).cumsum(dim=-1)  # (B, T): the example each token belongs to
    same = documents[:, :, None] == documents[:, None, :]  # (B, T, T)
    T = positions.size(-1)
    causal = torch.ones(T, T, dtype=torch.bool, device=positions.device).tril()
    return (same & causal)[:, None]  # one mask for every head


class KVCache:
    """The keys and values a GPT computed for the tokens it has seen, for decoding one token
    at a time: each step then runs the new token only, attending to the cached ones.

    Per layer, k and v are (B, H, max_length, D), allocated at the layer's first write in the
    dtype it computes in (bf16 under autocast) and with its own head count (pruning may leave
    layers with different ones); `length` positions of them are filled. Build one with
    `GPT.new_kv_cache()` and pass it to every forward of a sequence.
    """

    def __init__(self, num_layers: int, max_length: int) -> None:
        self.max_length, self.length = max_length, 0
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new tokens' k and v (B, H, T, D) after the `length` cached ones; returns
        every token's (B, H, length + T, D). `advance` moves `length` once all layers ran."""
        end = self.length + k.size(-2)
        assert end <= self.max_length, f"cache of {self.max_length} tokens cannot hold {end}"
        keys, values = self.keys[layer], self.values[layer]
        if keys is None or values is None:
            B, H, _, D = k.shape
            keys = self.keys[layer] = k.new_empty(B, H, self.max_length, D)
            values = self.values[layer] = v.new_empty(B, H, self.max_length, v.size(-1))
        keys[:, :, self.length : end] = k
        values[:, :, self.length : end] = v
        return keys[:, :, :end], values[:, :, :end]

    def advance(self, num_tokens: int) -> None:
        self.length += num_tokens

    def placement(self, num_tokens: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Per-row positions and key mask of the next tokens: none here, they follow `length`
        (a hone.models.slot_cache.SlotCache gives each row its own)."""
        return None, None

    def reset(self) -> None:
        """Forget every token (the buffers are kept for the next sequence of the same batch)."""
        self.length = 0


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where token t attends to tokens <= t only."""

    causal_mask: torch.Tensor
    rope: torch.Tensor | None

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
        self.attn, self.block_size, self.dropout = cfg.attn, cfg.block_size, cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.proj.residual = True  # type: ignore[assignment]  # scaled at init (GPT-2)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.q_norm = RMSNorm(self.head_dim) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if cfg.qk_norm else nn.Identity()
        if cfg.pos == "rope":
            if self.head_dim % 2:
                raise ConfigError(
                    f"model.pos = 'rope' needs an even head width (n_embd / n_head), got {self.head_dim}; "
                    "set --model.n_embd or --model.n_head so that n_embd / n_head is even"
                )
            self.register_buffer(
                "rope", _rope_tables(cfg.block_size, self.head_dim), persistent=False
            )
        else:
            self.rope = None
        if cfg.attn == "plain":  # SDPA builds its mask itself; a buffer follows the device
            mask = torch.ones(cfg.block_size, cfg.block_size, dtype=torch.bool).tril()
            self.register_buffer("causal_mask", mask, persistent=False)  # (T, T), True = may attend

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, C); packed rows (no cache) come with each token's `positions` (B, T) and
        their `document_mask` (B, 1, T, T)."""
        B, T, C = x.shape
        start = 0 if cache is None else cache.length  # position of x's first token
        # (B, T, 3C) -> three (B, H, T, D)
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            rope = self.rope if positions is None else self.rope[:, positions].unsqueeze(2)
            q, k = _apply_rope(q, rope, start), _apply_rope(k, rope, start)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H, S, D), S = start + T: all tokens so far
        S = k.size(-2)
        dropout = self.dropout if self.training else 0.0
        if self.attn == "plain":
            att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, S)
            if mask is None:
                mask = self.causal_mask[start : start + T, :S]  # query start + i sees keys <= it
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = F.dropout(att, dropout, self.training) @ v  # (B, H, T, D)
        else:
            # is_causal's mask lets query i see keys <= i: right only when nothing is cached.
            # One new token may see every cached key; a chunk after them needs its own mask.
            causal = mask is None and not start
            if mask is None and start and T > 1:
                mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(start)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal
            )
        # (B, T, H * D): C, unless structured pruning removed heads (hone compress --prune)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> C with GELU (exact or tanh) or squared ReLU."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.proj.residual = True  # type: ignore[assignment]
        self.kind = cfg.mlp
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.activation(self.fc(x))))  # fc: (B, T, 4C)

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        """The nonlinearity between fc and proj (hone.models.gpt_decode calls it too)."""
        if self.kind == "relu2":
            return F.relu(h).square()
        # GPT-2 was trained with the tanh approximation: its weights expect it
        return F.gelu(h, approximate="tanh" if self.kind == "gelu_tanh" else "none")


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.norm1, self.attn = _norm(cfg, cfg.n_embd), CausalSelfAttention(cfg)
        self.norm2, self.mlp = _norm(cfg, cfg.n_embd), MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cache, layer, positions, mask)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Decoder-only transformer: idx (B, T) token ids -> logits (B, T, V)."""

    # forward(idx, targets=y) returns the loss without the (B, T, V) logits: the language
    # task trains through it (hone.models.lm_loss)
    loss_from_targets = True

    def __init__(self, cfg: GPTConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = cfg
        self.block_size, self.vocab_size = cfg.block_size, vocab_size
        # Set by the engine from train.activation_checkpointing: recompute each block's
        # activations in backward, trading about a third more compute for memory.
        self.activation_checkpointing = False
        self.token_embedding = nn.Embedding(vocab_size, cfg.n_embd)
        self.pos_embedding = (
            nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = _norm(cfg, cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        self._init_weights(cfg)

    @property
    def context_length(self) -> int:
        """Tokens per training window: the block size."""
        return self.block_size

    def flops_per_token(self, context: int = 0) -> float:
        """Training FLOPs per token: 6 N + 12 n_layer n_embd T (PaLM, app. B), T the `context`
        trained (default: block_size).

        N counts the parameters that take part in a matrix multiply per token: all of them
        except the embedding lookups (the learned position table, and the token table when the
        head is untied), but including the LM head, which multiplies every token by a V x C
        matrix whether or not it shares the token table's weights. The attention term counts
        q @ k^T and att @ v over the full context for forward and backward, without halving for
        the causal mask (as PaLM and nanoGPT do). A frozen weight counts 4, not 6 (its own
        gradient is never computed: `weight_flops`).
        """
        cfg = self.config
        lookups = [] if self.pos_embedding is None else [self.pos_embedding.weight]
        if not cfg.tie_embeddings:
            lookups.append(self.token_embedding.weight)  # the untied head stays in N
        T = context or cfg.block_size
        return weight_flops(self, lookups) + 12.0 * cfg.n_layer * cfg.n_embd * T

    def _init_weights(self, cfg: GPTConfig) -> None:
        """GPT-2 init: N(0, 0.02) everywhere; residual projections scaled by 1/sqrt(2 n_layer).

        Each block adds two residual branches, so scaling their output projections keeps the
        residual stream's variance from growing with depth.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                std = 0.02
                if getattr(module, "residual", False):
                    std = 0.0 if cfg.zero_init_proj else 0.02 / math.sqrt(2 * cfg.n_layer)
                if std:
                    nn.init.normal_(module.weight, std=std)
                else:
                    nn.init.zeros_(module.weight)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def new_kv_cache(self, max_length: int = 0) -> KVCache:
        """An empty cache for `forward(idx, cache)`: up to `max_length` tokens per sequence
        (0 or more than block_size: block_size). Its buffers take max_length positions at
        the first forward, so a generation asks for what it needs, not a 32k context's."""
        limit = min(max_length, self.block_size) if max_length > 0 else self.block_size
        return KVCache(len(self.blocks), limit)

    def forward(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        targets: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) of idx (B, T). With `cache`, idx continues the tokens the cache
        holds (its positions start at `cache.length`), and their keys and values are added.
        With `targets` (B, T), the mean cross-entropy of those logits instead, computed a
        chunk of tokens at a time (hone.models.lm_loss) so the (B, T, V) logits never exist.
        With `positions` (B, T), idx holds packed examples (hone.finetune.packing): each
        token sits at its own position, and attends only within its example."""
        B, T = idx.shape
        start = 0 if cache is None else cache.length
        assert start + T <= self.block_size, (
            f"sequence of {start + T} tokens exceeds block_size {self.block_size}"
        )
        assert positions is None or cache is None, "packed examples are trained, not decoded"
        if cache is not None and T == 1 and targets is None:
            from hone.models.gpt_decode import decode_token, lean_decodable  # built on this

            if lean_decodable(self, idx, cache):  # one decoded token: the lean step
                return decode_token(self, idx, cache)
        mask = None if positions is None else document_mask(positions)  # (B, 1, T, T)
        if cache is not None:  # a slot cache's rows each sit at their own positions
            positions, mask = cache.placement(T)  # (B, T), (B, 1, T, S); or None, None
        x = self.token_embedding(idx)  # (B, T, C)
        if self.pos_embedding is not None:  # (T, C) broadcast, or (B, T, C) for packed rows
            if positions is None:
                x = x + self.pos_embedding(torch.arange(start, start + T, device=idx.device))
            else:
                x = x + self.pos_embedding(positions)
        x = self.dropout(x)
        for layer, block in enumerate(self.blocks):
            if cache is not None:
                x = block(x, cache, layer, positions, mask)
            elif self.activation_checkpointing and self.training:
                x = checkpoint(block, x, None, 0, positions, mask, use_reentrant=False)
            else:
                x = block(x, None, 0, positions, mask)
        if cache is not None:
            cache.advance(T)
        if targets is not None:
            return lm_head_loss(self.lm_head, self.norm(x), targets, label_smoothing)
        return self.lm_head(self.norm(x))  # (B, T, V)


def language_model_vocab(family: str, own_vocab_size: int, spec: ModelSpec) -> int:
    """The vocabulary of language-model family `family` (model.name) for data of `spec`:
    `model.vocab_size`, or the data's when 0; refused for data that is not a token stream."""
    if spec.task != "lm":
        raise ConfigError(
            f"model.name = '{family}' needs a token data set (shakespeare, text, tokens), but "
            f"the data's task is {spec.task}; set --data.name=shakespeare or pick another model"
        )
    vocab_size = own_vocab_size or spec.vocab_size
    if vocab_size < spec.vocab_size:
        raise ConfigError(
            f"model.vocab_size must be at least {spec.vocab_size} (the data's vocabulary: the "
            f"tokenizer's, or the largest token id + 1), got {own_vocab_size}; "
            "set --model.vocab_size=0 to take it from the data"
        )
    return vocab_size


@MODELS.register("gpt")
def gpt(cfg: ModelConfig, spec: ModelSpec) -> nn.Module:
    """The GPT for a token stream with `spec.vocab_size` symbols (or `model.vocab_size`)."""
    own: GPTConfig = cfg.arch
    own.validate()  # also for configs built in Python, which no loader has checked
    return GPT(own, language_model_vocab("gpt", own.vocab_size, spec))
