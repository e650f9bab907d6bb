"""Cross-entropy over a language model's head, a chunk of tokens at a time.

A 49,152-word vocabulary at batch 4 x 256 makes 200 MB of fp32 logits per step, and the
plain loss keeps several tensors that size alive at once (the logits, their log-softmax,
their gradient). Here the head's logits of one chunk of tokens exist at a time: each chunk's
loss and its gradients with respect to the hidden states and the head's weight are computed
in the forward pass, while the chunk's logits are at hand, so backward only scales them by
the incoming gradient. Nothing is recomputed (no second head matmul, as checkpointing each
chunk would need), and the result is the plain loss's, to float rounding:
`F.cross_entropy(hidden @ weight.T, targets, label_smoothing=...)` with the mean over the
targets that are not ignored (-100).

Shapes in comments: N tokens, C hidden width, V vocabulary, K tokens of one chunk.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # F.cross_entropy's default: targets that count for nothing
# Logits per chunk: 16M fp32 values (64 MB), 341 tokens of a 49k vocabulary. On the 2-core
# EPYC (C 576, V 49152, 1024 tokens, head + loss forward and backward, fastest of 3) chunks
# of 256-1024 tokens took 3.07-3.13 s against the plain path's 3.50 s, chunks of 128 4.14 s:
# the (V, C) gradient is read and written once per chunk. A small vocabulary is one chunk.
LOGITS_PER_CHUNK = 2**24


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    label_smoothing: float = 0.0,
    chunk_tokens: int = 0,
) -> torch.Tensor:
    """Mean cross-entropy of the logits `hidden @ weight.T` against `targets`, never holding
    more than `chunk_tokens` tokens' logits (0: as many as make LOGITS_PER_CHUNK values).

    hidden (..., C) the head's input, weight (V, C) the head's, targets (...) class ids.
    Differentiable in hidden and weight; under autocast the head runs in the autocast dtype
    and the softmax in fp32, as the plain path's would.
    """
    V = weight.size(0)
    rows = hidden.reshape(-1, hidden.size(-1))  # (N, C)
    chunk = chunk_tokens or even_chunk(rows.size(0), max(1, LOGITS_PER_CHUNK // V))
    loss = _HeadCrossEntropy.apply(rows, weight, targets.reshape(-1), label_smoothing, chunk)
    assert isinstance(loss, torch.Tensor)
    return loss


def even_chunk(rows: int, most: int) -> int:
    """Rows per chunk for `rows` rows in chunks of at most `most`: as few chunks, evened out.
    1,024 tokens at most 341 a chunk are 256 x 4, not 341 x 3 + 1, whose one-row
    chunk reads the whole (V, C) weight for one token: three memory-bound products, 15 ms
    under the profiler (SmolLM2-135M, fp32), though the head's forward and backward as a
    whole measured the same either way (0.80-0.83 s, a /tmp script)."""
    chunks = max(1, -(-rows // most))
    return max(1, -(-rows // chunks))


class _HeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,  # (N, C)
        weight: torch.Tensor,  # (V, C)
        targets: torch.Tensor,  # (N,)
        label_smoothing: float,
        chunk: int,
    ) -> torch.Tensor:
        device = hidden.device.type
        compute = hidden.dtype
        if torch.is_autocast_enabled(device):
            compute = torch.get_autocast_dtype(device)
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        # fp32 sums over chunks, whatever the compute dtype; cast to the weight's at the end
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            if want_weight
            else None
        )
        kept = targets != IGNORE_INDEX
        count = kept.sum().clamp(min=1).to(torch.float32)  # tokens the mean divides by
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        smooth, V = label_smoothing, weight.size(0)
        # The chunk-sized buffers, made once and written by every chunk: a (K, V) tensor is
        # past malloc's 32 MiB mmap threshold, so each new one came as fresh pages, faulted
        # in one by one as the matmul wrote them (~100 ms of a SmolLM2-135M step in bf16).
        rows_per_chunk = min(chunk, hidden.size(0))
        logits_buffer = hidden.new_empty((rows_per_chunk, V), dtype=torch.float32)
        low_buffer = None  # the matmul's output, and the gradient, in the compute dtype
        if compute != torch.float32:
            low_buffer = hidden.new_empty((rows_per_chunk, V), dtype=compute)
        with torch.autocast(device, enabled=False):
            w = weight.to(compute)
            for start in range(0, hidden.size(0), chunk):
                h = hidden[start : start + chunk].to(compute)  # (K, C)
                y = targets[start : start + chunk].clamp(min=0)  # (K,): ignored rows pick 0
                keep = kept[start : start + chunk]
                logits = logits_buffer[: h.size(0)]  # (K, V)
                if low_buffer is None:
                    torch.mm(h, w.t(), out=logits)
                else:
                    logits.copy_(torch.mm(h, w.t(), out=low_buffer[: h.size(0)]))
                target_logit = logits.gather(1, y[:, None]).squeeze(1)
                rows = -(1 - smooth) * target_logit  # (K,) each token's loss, less its lse
                if smooth:
                    rows = rows - smooth * logits.mean(dim=-1)
                # log-sum-exp in place (logsumexp would take a second (K, V) buffer, at the
                # step's memory peak), its exponentials kept for the softmax below
                top = logits.amax(dim=-1, keepdim=True)  # (K, 1)
                exps = logits.sub_(top).exp_()  # (K, V)
                sums = exps.sum(dim=-1)  # (K,)
                rows = rows + sums.log() + top.squeeze(1)
                total += rows.masked_fill(~keep, 0).sum()
                if grad_hidden is None and grad_weight is None:
                    continue
                # d loss / d logits = (softmax - (1 - s) onehot - s / V) / count, 0 if ignored
                grad = exps.div_(sums[:, None])
                grad.scatter_add_(1, y[:, None], torch.full_like(sums, smooth - 1)[:, None])
                if smooth:
                    grad.sub_(smooth / V)
                grad.mul_((keep / count)[:, None])
                if low_buffer is not None:
                    grad = low_buffer[: h.size(0)].copy_(grad)
                if grad_hidden is not None:
                    grad_hidden[start : start + chunk] = grad @ w  # (K, C)
                if grad_weight is not None:
                    if compute == torch.float32:
                        grad_weight.addmm_(grad.t(), h)  # (V, C) in place: no temporary
                    else:
                        grad_weight += grad.t() @ h
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype, ctx.spent = weight.dtype, False
        return total / count

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        # Scaled in place: a (V, C) product would be one more 113 MB buffer (SmolLM2-135M)
        # at the moment of the step when memory peaks, every activation still held. So the
        # saved gradients are spent: a second backward through the same graph is refused.
        assert not ctx.spent, "backward through the chunked loss runs once (no retain_graph)"
        ctx.spent = True
        grad_hidden, grad_weight = ctx.saved_tensors
        # A loss backpropagated as is (most are) leaves them as they are: on the CPU the check
        # costs nothing, and scaling the (V, C) gradient is a pass over 113 MB (SmolLM2-135M,
        # ~10 ms). On an accelerator the check would wait for the device, and under
        # torch.compile it would break the graph: scaled always.
        unscaled = (
            grad_loss.device.type == "cpu"
            and not torch.compiler.is_compiling()
            and float(grad_loss) == 1.0
        )
        if grad_hidden is not None and not unscaled:
            grad_hidden = grad_hidden.mul_(grad_loss.to(grad_hidden.dtype))
        if grad_weight is not None:
            if not unscaled:
                grad_weight = grad_weight.mul_(grad_loss)
            grad_weight = grad_weight.to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None


def lm_head_loss(
    head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """The mean cross-entropy of `head(hidden)` (B, T, V) against targets (B, T): chunked for
    a plain bias-free nn.Linear head; a head a converter replaced (LoRA, int8) is run whole.
    Only the rows whose targets count go through the head (`labelled_rows`)."""
    rows, targets = labelled_rows(hidden, targets)  # (K, C), (K,)
    if type(head) is nn.Linear and head.bias is None:
        return chunked_cross_entropy(rows, head.weight, targets, label_smoothing)
    logits = head(rows)  # (K, V)
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


def labelled_rows(hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (..., C) and targets (...) as (K, C) and (K,): the K rows whose targets are not
    ignored. A chat example's prompt and a padded row's tail are ignored targets, and their
    logits (a (V, C) product a token, forward and backward) would count for nothing: with the
    loss on answers only, half the head's work or more (bench/lora.py labelled: a third to
    a half of its chat rows' targets count, and steps ran 1.14-1.24x faster). The loss
    and the gradients are the same (ignored rows get a zero gradient, from index_select's
    backward). All rows are kept when every target counts (no copy), when none does (the
    loss says so as before), under torch.compile (a data-dependent shape), and off the CPU,
    where counting the rows would wait for the device mid-step."""
    rows, flat = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)  # (N, C), (N,)
    if rows.device.type != "cpu" or torch.compiler.is_compiling():
        return rows, flat
    index = (flat != IGNORE_INDEX).nonzero().squeeze(1)  # (K,)
    if index.numel() in (0, flat.numel()):
        return rows, flat
    return rows.index_select(0, index), flat.index_select(0, index)
