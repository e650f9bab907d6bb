"""The Llama family in one file: token embedding, pre-norm blocks of grouped-query attention
with rotary positions and a SwiGLU MLP, RMSNorm, LM head.

Mistral, Qwen2, Qwen3 and SmolLM are this model with other settings (hone.pretrained maps
their Hugging Face configs onto LlamaConfig): Qwen2 adds biases to q, k and v, Qwen3 an
RMSNorm over each head's queries and keys and a head width of its own, Llama 3.1 a rescaling
of the rotary frequencies for long contexts.

Shapes in comments: B batch, T time (tokens), C channels (n_embd), H query heads, G key/value
heads (H / G query heads share one), D head width, F the MLP's hidden width, V vocabulary,
S the tokens a key/value cache holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from hone.config import ModelConfig, opt, register_model_config
from hone.errors import ConfigError
from hone.models.base import MODELS, ModelSpec, weight_flops

# The GPT's cache holds whatever heads a layer writes (here the G key/value heads, which is
# what makes grouped-query attention's cache H / G times smaller).
from hone.models.gpt import KVCache, document_mask, language_model_vocab
from hone.models.lm_loss import lm_head_loss
from hone.models.recompute import recomputed


@register_model_config("llama")
@dataclass
class LlamaConfig:
    """`model.*` keys of the Llama family."""

    n_layer: int = opt(4, "number of transformer blocks", ge=1)
    n_head: int = opt(4, "query heads per block", ge=1)
    n_kv_head: int = opt(0, "key/value heads (grouped-query attention); 0 = n_head", ge=0)
    n_embd: int = opt(128, "embedding width", ge=1)
    head_dim: int = opt(0, "width of one head; 0 = n_embd / n_head", ge=0)
    intermediate_size: int = opt(
        0, "hidden width of the SwiGLU MLP; 0 = 8/3 n_embd rounded up to 64", ge=0
    )
    vocab_size: int = opt(0, "vocabulary size; 0 takes it from the tokenizer", ge=0)
    block_size: int = opt(64, "context length in tokens", ge=1)
    rope_theta: float = opt(10000.0, "base of the rotary frequencies", gt=0)
    rope_scaling: str = opt(
        "none",
        "stretch of the rotary frequencies for longer contexts",
        choices=["none", "linear", "llama3"],
    )
    rope_factor: float = opt(1.0, "rope scaling: how many times longer the context", gt=0)
    rope_low_freq_factor: float = opt(1.0, "llama3 rope scaling: low frequency bound", gt=0)
    rope_high_freq_factor: float = opt(4.0, "llama3 rope scaling: high frequency bound", gt=0)
    rope_original_block_size: int = opt(
        0, "llama3 rope scaling: the context trained before scaling; 0 = block_size", ge=0
    )
    norm_eps: float = opt(1e-5, "epsilon of the RMSNorms", gt=0)
    qkv_bias: bool = opt(False, "bias in the query, key and value projections (Qwen2)")
    qk_norm: bool = opt(False, "RMSNorm of each head's queries and keys (Qwen3)")
    tie_embeddings: bool = opt(True, "share the token embedding with the LM head")
    attn: str = opt("auto", "attention kernel; auto is SDPA", choices=["auto", "sdpa", "plain"])
    dropout: float = opt(0.0, "dropout probability (embeddings, attention, residual)", ge=0, lt=1)

    @property
    def context_length(self) -> int:
        return self.block_size

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def head_width(self) -> int:
        return self.head_dim or self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        # Llama's rule: 2/3 of a 4C MLP, since SwiGLU has three matrices instead of two
        return self.intermediate_size or 64 * math.ceil(8 * self.n_embd / 3 / 64)

    def validate(self) -> None:
        if not self.head_dim and self.n_embd % self.n_head:
            raise ConfigError(
                f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head}) "
                "when model.head_dim = 0; set --model.head_dim or --model.n_head"
            )
        if self.n_head % self.kv_heads:
            raise ConfigError(
                f"model.n_head ({self.n_head}) must be a multiple of model.n_kv_head "
                f"({self.n_kv_head}); set --model.n_kv_head to a divisor of {self.n_head}"
            )
        if self.head_width % 2:
            raise ConfigError(
                f"rotary positions need an even head width, got {self.head_width}; "
                "set --model.head_dim (or --model.n_embd / --model.n_head) to an even width"
            )
        if (
            self.rope_scaling == "llama3"
            and self.rope_high_freq_factor <= self.rope_low_freq_factor
        ):
            raise ConfigError(
                f"model.rope_high_freq_factor ({self.rope_high_freq_factor}) must exceed "
                f"model.rope_low_freq_factor ({self.rope_low_freq_factor}); set one of them"
            )


def rope_frequencies(cfg: LlamaConfig) -> torch.Tensor:
    """Angular speed of each rotated channel pair: (D/2,), in radians per position.

    Pair i turns at theta^(-2i/D) (RoFormer). Linear scaling slows every pair by `rope_factor`
    (position interpolation); llama3 slows only the pairs whose wavelength is longer than the
    original context / low_freq_factor, keeps those shorter than it / high_freq_factor, and
    blends in between, so local (fast) rotations stay as trained.
    """
    D = cfg.head_width
    # on the CPU even under a meta-device context (a model built there recomputes them)
    steps = torch.arange(0, D, 2, dtype=torch.float32, device="cpu")
    # 1 / theta^(i/D) rather than theta^(-i/D): the checkpoints' own rounding, to the last bit
    inv_freq = 1.0 / (cfg.rope_theta ** (steps / D))
    factor = cfg.rope_factor
    if cfg.rope_scaling == "linear":
        return inv_freq / factor
    if cfg.rope_scaling == "llama3":
        original = cfg.rope_original_block_size or cfg.block_size
        wavelength = 2 * math.pi / inv_freq
        slow_above = original / cfg.rope_low_freq_factor  # wavelengths longer than this: / factor
        keep_below = original / cfg.rope_high_freq_factor  # shorter than this: unchanged
        low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
        smooth = (original / wavelength - low) / (high - low)  # 0 at slow_above, 1 at keep_below
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        scaled = torch.where(wavelength > slow_above, inv_freq / factor, inv_freq)
        between = (wavelength >= keep_below) & (wavelength <= slow_above)
        return torch.where(between, blended, scaled)
    return inv_freq


class RMSNorm(nn.RMSNorm):
    """RMSNorm whose statistics are taken in fp32 whatever the input's dtype, as the Llama
    checkpoints were trained (a bf16 mean of squares loses digits); the normalized input is
    cast back before the gain multiplies it."""

    def forward(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The normed x, cast to `dtype` if given."""
        if self.weight is not None and torch.is_grad_enabled():
            out = _RMSNormFunction.apply(x, self.weight, self.eps)
            assert isinstance(out, torch.Tensor)
        else:
            out = rms_norm(x, self.weight, self.eps)
        return out if dtype is None else out.to(dtype)

    def remake(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """forward(x, dtype) again, to the bit, without autograd (hone.models.recompute)."""
        out = rms_norm(x, self.weight, self.eps)
        return out if dtype is None else out.to(dtype)


def _matmul_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast runs x's matmuls in; None outside autocast."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return None


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float | None) -> torch.Tensor:
    """F.rms_norm's own formula (to the last bit) with the statistics in fp32, spelled out:
    F.rms_norm's own casts made 6% of the ops of a decoding step (SmolLM2-135M: 427 of the
    6,891 aten ops a token)."""
    return _rms_norm_and_rstd(x, weight, eps)[0]


def _rms_norm_and_rstd(
    x: torch.Tensor, weight: torch.Tensor | None, eps: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """rms_norm(x, weight, eps) and the fp32 1 / rms of each row (..., 1) it divided by."""
    x32 = x if x.dtype == torch.float32 else x.float()
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    rstd = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True).add_(eps))
    normed = x32 * rstd
    if normed.dtype != x.dtype:
        normed = normed.to(x.dtype)
    return (normed * weight if weight is not None else normed), rstd


class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm with a gain that keeps its input (and each row's 1 / rms) only for backward,
    not the normalized input too: autograd's own keeps both (one (B, T, C) tensor more a
    norm, two a block: 135 MB at SmolLM2-135M's 30 blocks and batch 4 x 256)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float | None
    ) -> torch.Tensor:
        out, rstd = _rms_norm_and_rstd(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        x, weight, rstd = ctx.saved_tensors
        want_x, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if x.dtype == grad.dtype == weight.dtype == torch.float32:
            return (*_fp32_backward(grad, x, weight, rstd, want_x, want_weight), None)
        normed = x.float() * rstd  # (..., C) what the gain multiplied, before its cast
        grad_weight = None
        if want_weight:
            product = grad * normed.to(x.dtype)
            grad_weight = product.reshape(-1, product.size(-1)).sum(0).to(weight.dtype)
        grad_x = None
        if want_x:
            g = (grad * weight).float()  # d loss / d normed
            # d normed / d x = rstd (I - normed normed^T / C)
            grad_x = (rstd * (g - normed * (g * normed).mean(dim=-1, keepdim=True))).to(x.dtype)
        return grad_x, grad_weight, None


def _fp32_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    rstd: torch.Tensor,
    want_x: bool,
    want_weight: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """RMSNorm's gradients in fp32 through LayerNorm's fused CPU/GPU backward kernel.

    Written here because torch has no RMSNorm backward kernel on the CPU (aten's
    _fused_rms_norm_backward is CUDA's only in torch 2.13), and the formula spelled out in
    tensor ops (the other dtypes' path above) reads and writes a (..., C) tensor eleven
    times. With a zero mean, LayerNorm's normalized input is RMSNorm's (x rstd) and its
    gain's gradient is RMSNorm's; its input's gradient, rstd (g - mean(g) - xhat mean(g
    xhat)) with g = grad * weight, has one term RMSNorm's lacks: rstd mean(g), added back
    here (mean(g) is a matrix-vector product, grad @ weight / C). SmolLM2-135M's width at
    batch 4 x 256, 2 threads: 0.55 ms against 1.29 a norm."""
    C = x.size(-1)
    grad_x, grad_weight, _ = torch.ops.aten.native_layer_norm_backward(
        grad, x, [C], torch.zeros_like(rstd), rstd, weight, None, [want_x, want_weight, False]
    )
    if want_x:
        mean_g = (grad.reshape(-1, C) @ weight).view(rstd.shape)  # (..., 1) C mean(g)
        grad_x.addcmul_(rstd, mean_g, value=1 / C)
    return grad_x, grad_weight


def _causal_mask(T: int, S: int, device: torch.device) -> torch.Tensor:
    """(T, S), True where the last T of S tokens may attend: query S - T + i sees keys <= it.
    Built per call, not kept as a buffer: one for a 128k context would take 16 GB."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(S - T)


def rotate_half(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of each head's channels, the checkpoints'
    "rotate half" convention: x (B, T, heads, D) by the angles whose cos and sin are `rope`
    (2, T, 1, D), or each row's own (2, B, T, 1, D), both halves alike (`rope_tables`).
    x cos + (-x2, x1) sin is (x1 cos - x2 sin, x2 cos + x1 sin) to the last bit, in fewer
    ops than the halves apart: they count when decoding runs a token at a time."""
    cos, sin = rope.to(x.dtype).unbind(0)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def rope_tables(angles: torch.Tensor) -> torch.Tensor:
    """cos and sin of `angles` (T, D/2), or (B, T, D/2) per row, for `rotate_half`: (2, T, 1, D)
    or (2, B, T, 1, D), once a forward rather than once a layer."""
    angles = torch.cat([angles, angles], dim=-1).unsqueeze(-2)
    return torch.stack([angles.cos(), angles.sin()])


class Attention(nn.Module):
    """Causal grouped-query attention: H query heads share G key/value heads."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        C, self.H, self.G, self.D = cfg.n_embd, cfg.n_head, cfg.kv_heads, cfg.head_width
        self.attn, self.dropout = cfg.attn, cfg.dropout
        self.q = nn.Linear(C, self.H * self.D, bias=cfg.qkv_bias)
        self.k = nn.Linear(C, self.G * self.D, bias=cfg.qkv_bias)
        self.v = nn.Linear(C, self.G * self.D, bias=cfg.qkv_bias)
        self.proj = nn.Linear(self.H * self.D, C, bias=False)
        self.q_norm = RMSNorm(self.D, cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.D, cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, C) at positions start .. start + T - 1, whose rotary cos and sin are
        `rope` (2, T, 1, D); start is the number of tokens the cache holds (0 without one).
        Packed rows (no cache) come with each token's own `rope` (2, B, T, 1, D) and their
        `document_mask` (B, 1, T, T)."""
        B, T, _ = x.shape
        # Rotated before the heads move to dim 1, so q stays (B, T, H, D) in memory: SDPA's
        # output then follows that layout, and the reshape for proj below is a view instead
        # of a (B, T, C) copy that proj would keep for backward.
        q = rotate_half(self.q_norm(self.q(x).view(B, T, self.H, self.D)), rope).transpose(1, 2)
        k = rotate_half(self.k_norm(self.k(x).view(B, T, self.G, self.D)), rope).transpose(1, 2)
        v = self.v(x).view(B, T, self.G, self.D).transpose(1, 2)  # (B, G, T, D)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, G, S, D): every token so far
        S = k.size(-2)
        start = S - T  # tokens cached before x
        dropout = self.dropout if self.training else 0.0
        if self.attn == "plain":
            # (B, H, S, D): query head h reads key/value head h // (H / G), as SDPA's GQA does
            k = k.repeat_interleave(self.H // self.G, dim=1)
            v = v.repeat_interleave(self.H // self.G, dim=1)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(self.D)  # (B, H, T, S)
            allowed = _causal_mask(T, S, x.device) if mask is None else mask
            att = att.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
            y = F.dropout(att, dropout, self.training) @ v  # (B, H, T, D)
        else:
            # is_causal is right when nothing is cached, and one new token sees every key;
            # only a chunk after cached tokens (or packed rows) needs its mask spelled out
            if mask is None and start and T > 1:
                mask = _causal_mask(T, S, x.device)
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                dropout_p=dropout,
                is_causal=mask is None and not start,
                enable_gqa=self.G != self.H,
            )
        y = y.transpose(1, 2).reshape(B, T, self.H * self.D)
        return self.resid_dropout(self.proj(y))  # (B, T, C)


class MLP(nn.Module):
    """SwiGLU feed-forward: C -> F (a SiLU gate times a linear branch) -> C."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(cfg.n_embd, cfg.mlp_width, bias=False)
        self.up = nn.Linear(cfg.n_embd, cfg.mlp_width, bias=False)
        self.down = nn.Linear(cfg.mlp_width, cfg.n_embd, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate(x), self.up(x)  # (B, T, F) each
        # Backward keeps gate and up only: silu(gate) (kept by the product) and the product
        # (kept by down, a plain layer or an adapter) are made again from them. down's
        # backward runs first; the silu(gate) it makes is handed to the product's, next.
        silu = F.silu(gate)
        handed: list[torch.Tensor] = []

        def remake_silu() -> torch.Tensor:
            return handed.pop() if handed else F.silu(gate)

        def remake_hidden() -> torch.Tensor:
            remade = F.silu(gate)
            if up.requires_grad:  # only then does the product's backward take it
                handed.append(remade)
            return remade * up

        with recomputed(silu, remake_silu):
            hidden = silu * up
        with recomputed(hidden, remake_hidden):
            return self.dropout(self.down(hidden))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.norm1, self.attn = RMSNorm(cfg.n_embd, cfg.norm_eps), Attention(cfg)
        self.norm2, self.mlp = RMSNorm(cfg.n_embd, cfg.norm_eps), MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # The normed inputs are kept for backward as their recipe (the norm's input is kept
        # anyway): 4.5 MiB a block at SmolLM2-135M's width and batch 4 x 256. Under autocast
        # they are cast here, once for the linear layers that read them: each would cast,
        # and keep for backward, a copy of its own (q, k and v three, gate and up two).
        dtype = _matmul_dtype(x)
        normed = self.norm1(x, dtype)
        with recomputed(normed, partial(self.norm1.remake, x, dtype)):
            mid = x + self.attn(normed, rope, cache, layer, mask)
        normed = self.norm2(mid, dtype)
        with recomputed(normed, partial(self.norm2.remake, mid, dtype)):
            return mid + self.mlp(normed)


class Llama(nn.Module):
    """Decoder-only transformer: idx (B, T) token ids -> logits (B, T, V)."""

    # forward(idx, targets=y) returns the loss without the (B, T, V) logits: the language
    # task trains through it (hone.models.lm_loss)
    loss_from_targets = True

    rope_inv_freq: torch.Tensor

    def __init__(self, cfg: LlamaConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = cfg
        self.block_size, self.vocab_size = cfg.block_size, vocab_size
        # Set by the engine from train.activation_checkpointing (as for the GPT).
        self.activation_checkpointing = False
        self.token_embedding = nn.Embedding(vocab_size, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        # Frequencies, not a (T, D) table: a table for a 128k context would take 64 MB, and
        # cos/sin of the few positions a forward needs cost nothing next to its matmuls.
        self.register_buffer("rope_inv_freq", rope_frequencies(cfg), persistent=False)
        self._init_weights(cfg)

    @property
    def context_length(self) -> int:
        """Tokens per training window: the block size."""
        return self.block_size

    def reset_buffers(self) -> None:
        """Recompute the buffers that no checkpoint holds (the rotary frequencies), on the
        weights' device: a model built on the meta device and then given its weights needs it."""
        device = self.token_embedding.weight.device
        self.rope_inv_freq = rope_frequencies(self.config).to(device)

    def flops_per_token(self, context: int = 0) -> float:
        """Training FLOPs per token: 6 N + 12 n_layer (H D) T, as for the GPT (PaLM, app. B):
        N counts every parameter that multiplies a token (the LM head included, the token
        lookup not, when untied), a frozen weight 4 (`weight_flops`); attention's q @ k^T and
        att @ v run H D wide over T, the `context` trained (default: block_size, which for
        a pretrained checkpoint is its whole context: SmolLM2's 8,192, 32x the 256-token
        windows a fine-tuning run trains on)."""
        cfg = self.config
        lookups = [] if cfg.tie_embeddings else [self.token_embedding.weight]
        T = context or cfg.block_size
        attention = 12.0 * cfg.n_layer * cfg.n_head * cfg.head_width * T
        return weight_flops(self, lookups) + attention

    def _init_weights(self, cfg: LlamaConfig) -> None:
        """N(0, 0.02), the residual output projections scaled by 1/sqrt(2 n_layer) (GPT-2's
        reason: two residual branches per block would otherwise grow the stream's variance)."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                residual = name.endswith(("attn.proj", "mlp.down"))
                std = 0.02 / math.sqrt(2 * cfg.n_layer) if residual else 0.02
                nn.init.normal_(module.weight, std=std)
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
        if cache is not None and T == 1 and targets is None and positions is None:
            # one decoded token: the same ops without the modules (imported here: the lean
            # step is built on this module)
            from hone.models.llama_decode import decode_token, lean_decodable

            if lean_decodable(self, idx, cache):
                return decode_token(self, idx, cache)
        start = 0 if cache is None else cache.length
        assert start + T <= self.block_size, (
            f"sequence of {start + T} tokens exceeds block_size {self.block_size}"
        )
        mask = None
        if cache is not None:  # a slot cache's rows each sit at their own positions
            assert positions is None, "packed examples are trained, not decoded"
            positions, mask = cache.placement(T)  # (B, T), (B, 1, T, S); or None, None
        if positions is None:
            steps = torch.arange(start, start + T, device=idx.device, dtype=torch.float32)
            angles = steps[:, None] * self.rope_inv_freq[None, :]  # (T, D/2)
            rope = rope_tables(angles)  # (2, T, 1, D)
        else:
            angles = positions.float()[..., None] * self.rope_inv_freq  # (B, T, D/2)
            rope = rope_tables(angles)  # (2, B, T, 1, D)
            if mask is None:
                mask = document_mask(positions)  # (B, 1, T, T)
        x = self.dropout(self.token_embedding(idx))  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            if cache is not None:
                x = block(x, rope, cache, layer, mask)
            elif self.activation_checkpointing and self.training:
                x = checkpoint(block, x, rope, None, 0, mask, use_reentrant=False)
            else:
                x = block(x, rope, None, 0, mask)
        if cache is not None:
            cache.advance(T)
        if targets is not None:
            return lm_head_loss(self.lm_head, self.norm(x), targets, label_smoothing)
        return self.lm_head(self.norm(x))  # (B, T, V)


@MODELS.register("llama")
def llama(cfg: ModelConfig, spec: ModelSpec) -> nn.Module:
    """The Llama for a token stream with `spec.vocab_size` symbols (or `model.vocab_size`)."""
    own: LlamaConfig = cfg.arch
    own.validate()  # also for configs built in Python, which no loader has checked
    return Llama(own, language_model_vocab("llama", own.vocab_size, spec))
