"""Muon for the hidden weight matrices, AdamW for everything else, as one optimizer.

Which parameters Muon takes: every trainable 2-D parameter except
  - the weights of `nn.Embedding` / `nn.EmbeddingBag` modules (lookup tables, not linear maps),
  - the output head: the weight of the last `nn.Linear` in `model.modules()` order and of any
    module whose name ends in "head" (e.g. `lm_head`); a head tied to the token embedding is
    the embedding's parameter, so it is excluded by the first rule.
AdamW takes the rest: embeddings, the head, norms, biases and conv kernels. Muon's
orthogonalized update suits matrices that map one hidden space to another; the tables and the
head are better served by AdamW (as in the Muon authors' recipe).

Muon's Newton–Schulz iterations run in `optim.muon_precision`: 'auto' takes bf16 where the
device multiplies bf16 in hardware (`hone.hardware.native_bf16`) and fp32 elsewhere, where
torch's bf16 iterations are emulated: 810 ms a step against 30 ms in fp32 (issue 18).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim._muon import _adjust_lr, _zeropower_via_newtonschulz

from hone.config import OptimConfig, opt, register_optim_config
from hone.errors import ConfigError
from hone.hardware import native_bf16
from hone.optim.base import (
    BetasConfig,
    betas_field,
    check_betas,
    eps_field,
    kernel_kwargs,
    register_optimizer,
    trainable_parameters,
)


def split_muon_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon's parameters, AdamW's parameters), each in `model.parameters()` order."""
    excluded: set[int] = set()
    last_linear: nn.Linear | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding | nn.EmbeddingBag):
            excluded.add(id(module.weight))
        if isinstance(module, nn.Linear):
            last_linear = module
        weight = getattr(module, "weight", None)
        if name.rsplit(".", 1)[-1].endswith("head") and isinstance(weight, Tensor):
            excluded.add(id(weight))
    if last_linear is not None:
        excluded.add(id(last_linear.weight))
    muon: list[nn.Parameter] = []
    adamw: list[nn.Parameter] = []
    for p in trainable_parameters(model):
        (muon if p.ndim == 2 and id(p) not in excluded else adamw).append(p)
    return muon, adamw


NS_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# Stacks of at most this many elements (16 MiB in fp32) per batched matmul: a bound on the
# extra memory (a stack and its iterates) rather than a measured optimum. Batching pays for
# small matrices, whose one-by-one matmuls are short calls that leave the cores idle in between
# (the char GPT's 128x512 ones: BENCHMARKS.md, issue 18); large ones fill the cores alone.
MAX_BATCH_ELEMENTS = 1 << 22


def newton_schulz_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of Newton–Schulz for `optim.muon_precision` on `device` (auto: the fast one)."""
    if precision == "auto":
        precision = "bf16" if native_bf16(device) else "fp32"
    return NS_DTYPES[precision]


def newton_schulz(
    x: Tensor,
    coefficients: tuple[float, float, float],
    steps: int,
    eps: float,
    gram_form: bool | None = None,
) -> Tensor:
    """torch.optim.Muon's quintic Newton–Schulz iteration on a stack of wide matrices, batched.

    x: (k, m, n) with m <= n, in the dtype to iterate in. Returns (k, m, n): each matrix
    nearly orthogonalized (singular values near 1), as torch's `_zeropower_via_newtonschulz`
    does for one matrix. `gram_form`: by `gram_newton_schulz`; None (auto): in fp32 where
    that needs fewer FLOPs.
    """
    a, b, c = coefficients
    # The Frobenius norm bounds the spectral norm: every singular value starts in [0, 1].
    x = x / x.norm(dim=(1, 2), keepdim=True).clamp(min=eps)
    m, n = x.shape[1:]
    if gram_form is None:
        # FLOPs over m² of the two forms (see gram_newton_schulz); for 5 steps: n > 1.5 m.
        fewer_flops = 4 * n + (8 * steps - 6) * m < steps * (4 * n + 2 * m)
        gram_form = x.dtype == torch.float32 and fewer_flops
    if gram_form:
        return gram_newton_schulz(x, coefficients, steps)
    for _ in range(steps):
        gram = torch.bmm(x, x.mT)  # (k, m, m): the smaller Gram matrix, as x is wide
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b*A + c*A@A
        x = torch.baddbmm(x, poly, x, beta=a)  # a*X + poly@X
    return x


def gram_newton_schulz(x: Tensor, coefficients: tuple[float, float, float], steps: int) -> Tensor:
    """The same iteration as `newton_schulz` on a normalized stack x (k, m, n), with fewer FLOPs.

    Each step is X' = P X with P = aI + bA + cA², A = X Xᵀ, so X_t = Q_t X_0 with
    Q_t = P_{t-1} ... P_0 (m x m), and A_{t+1} = P_t A_t P_t. Iterating on the m x m
    matrices A and Q touches the n-wide X only twice (A_0 and Q X_0): 5 steps cost
    (34 m + 4 n) m² FLOPs against (10 m + 20 n) m², 44% fewer for n = 4m. Only in
    fp32: rounding errors in A and Q are amplified by the later products, which bf16 does not
    survive (measured on a nearly rank-4 stack of 128x512: max error against fp64 5.0 in bf16,
    against 0.04 for bf16 `newton_schulz`; in fp32 1.4e-5 against 3.0e-6).
    """
    a, b, c = coefficients
    gram = torch.bmm(x, x.mT)  # (k, m, m)
    product: Tensor | None = None
    for step in range(steps):
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        poly.diagonal(dim1=1, dim2=2).add_(a)  # P = aI + bA + cA²
        product = poly if product is None else torch.bmm(poly, product)
        if step < steps - 1:
            gram = torch.bmm(torch.bmm(poly, gram), poly)
    return x if product is None else torch.bmm(product, x)


def orthogonalize(
    updates: Sequence[Tensor], group: dict[str, Any], dtype: torch.dtype, batched: bool
) -> list[Tensor]:
    """Newton–Schulz of each update in `dtype` with `group`'s coefficients, steps and eps.

    Tall matrices are transposed to wide ones (as torch does: the Gram matrix is then the
    smaller one), so a (512, 128) and a (128, 512) matrix share one batch when `batched`.
    """
    coefficients, steps, eps = group["ns_coefficients"], group["ns_steps"], group["eps"]
    if dtype == torch.bfloat16 and not batched:
        return [_zeropower_via_newtonschulz(u, coefficients, steps, eps) for u in updates]
    batches: dict[tuple[Any, ...], list[int]] = {}
    for i, update in enumerate(updates):
        m, n = update.shape
        key = (min(m, n), max(m, n), update.device) if batched else (i,)
        batches.setdefault(key, []).append(i)
    results: list[Tensor | None] = [None] * len(updates)
    for indices in batches.values():
        per_batch = max(1, MAX_BATCH_ELEMENTS // updates[indices[0]].numel())
        for start in range(0, len(indices), per_batch):
            chunk = indices[start : start + per_batch]
            tall = [updates[i].size(0) > updates[i].size(1) for i in chunk]
            wide = [updates[i].mT if t else updates[i] for i, t in zip(chunk, tall, strict=True)]
            x = torch.stack(wide).to(dtype)  # (k, m, n), m <= n
            x = newton_schulz(x, coefficients, steps, eps)
            for j, (i, t) in enumerate(zip(chunk, tall, strict=True)):
                results[i] = x[j].mT if t else x[j]
    done = [r for r in results if r is not None]
    assert len(done) == len(updates)
    return done


class Muon(torch.optim.Muon):
    """torch.optim.Muon with its Newton–Schulz iterations in `ns_dtype`, and `batched` by shape.

    torch's Muon always iterates in bf16 (`grad.bfloat16()` in torch/optim/_muon.py) and one
    matrix at a time, and takes no option for either; everything else (arguments, parameter
    groups, the momentum buffers in `state`, hence checkpoints) is torch's, so a checkpoint
    moves between this class and torch's, and between machines that iterate in different
    dtypes. The lr adjustment is torch's own, and so is the iteration with
    `ns_dtype=bfloat16` and `batched=False` (private helpers of torch/optim/_muon.py, as of
    the torch in constraints.txt).
    """

    def __init__(self, params: Any, *, ns_dtype: torch.dtype, batched: bool, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.ns_dtype, self.batched = ns_dtype, batched

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One Muon step: momentum, Newton–Schulz, decoupled weight decay, the update."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            buffers: list[Tensor] = []
            self._init_group(group, params, grads, buffers)
            if params:
                self._step_group(group, params, grads, buffers)
        return loss

    def _step_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        buffers: list[Tensor],
    ) -> None:
        # The arithmetic of torch's `_single_tensor_muon`, op for op, as foreach calls.
        lr, momentum = float(group["lr"]), group["momentum"]
        torch._foreach_lerp_(buffers, grads, 1 - momentum)
        updates = torch._foreach_lerp(grads, buffers, momentum) if group["nesterov"] else buffers
        updates = orthogonalize(updates, group, self.ns_dtype, self.batched)
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        for param, update in zip(params, updates, strict=True):
            param.add_(update, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], param.shape))


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon (torch.optim.Muon or the subclass above) and torch.optim.AdamW stepped together,
    seen as one `Optimizer`.

    It subclasses `Optimizer` (LRScheduler accepts only those) and shares its `param_groups`
    (Muon's groups first, then AdamW's: the same dict objects) and its `state` with the inner
    optimizers. A scheduler's lr changes thus reach both, and the inherited `state_dict()`,
    `load_state_dict()` and `zero_grad()` work unchanged, in torch's standard format
    (parameters numbered across both).
    """

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW | None) -> None:
        self.inner: list[torch.optim.Optimizer] = [muon] + ([adamw] if adamw else [])
        groups = [group for inner in self.inner for group in inner.param_groups]
        # The lr in defaults is AdamW's (optim.lr): schedules read it as schedule.min_lr's base.
        lr = (adamw or muon).defaults["lr"]
        super().__init__(groups, {"lr": lr})
        self._share_with_inner()

    def _share_with_inner(self) -> None:
        start = 0
        for inner in self.inner:
            end = start + len(inner.param_groups)
            inner.param_groups = self.param_groups[start:end]
            inner.state = self.state
            start = end

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One step of each inner optimizer; returns the closure's loss, if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for inner in self.inner:
            inner.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Optimizer.load_state_dict replaces self.param_groups and self.state with new objects;
        # hand those to the inner optimizers again.
        super().load_state_dict(state_dict)
        self._share_with_inner()


@register_optim_config("muon")
@dataclass
class MuonConfig(BetasConfig):
    """Muon's own keys; optim.lr, optim.weight_decay and these betas and eps drive its AdamW."""

    muon_lr: float = opt(0.02, "learning rate of the 2-D hidden weights", gt=0)
    muon_momentum: float = opt(0.95, "momentum of the 2-D hidden weights", ge=0, lt=1)
    muon_precision: str = opt(
        "auto",
        "dtype of the Newton-Schulz iterations: auto (bf16 where the device has native bf16, "
        "else fp32), bf16 (torch's), fp32",
        choices=["auto", "bf16", "fp32"],
    )
    betas: list[float] = betas_field()
    eps: float = eps_field()


@register_optimizer("muon")
def build_muon(cfg: OptimConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """Muon (optim.muon_lr, optim.muon_momentum) + AdamW (optim.lr, optim.betas)."""
    muon_params, adamw_params = split_muon_params(model)
    if not muon_params:
        raise ConfigError(
            "optim.name='muon' needs 2-D hidden weight matrices (weights of nn.Linear layers "
            "other than the output head), but the model has none; set --optim.name=adamw"
        )
    muon = Muon(
        muon_params,
        ns_dtype=newton_schulz_dtype(cfg.muon_precision, device),
        # Batched on the CPU, where it was measured to pay (BENCHMARKS.md, issue 18); CUDA
        # keeps torch's one-matrix-at-a-time kernel, not measured against a batched one.
        batched=device.type == "cpu",
        lr=cfg.muon_lr,
        momentum=cfg.muon_momentum,
        weight_decay=cfg.weight_decay,
    )
    # A model whose every parameter is a hidden matrix (no head, norms or biases) has none left
    # for AdamW, which refuses an empty list.
    adamw = None
    if adamw_params:
        groups = [
            {"params": [p for p in adamw_params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in adamw_params if p.ndim < 2], "weight_decay": 0.0},
        ]
        adamw = torch.optim.AdamW(
            [g for g in groups if g["params"]],
            lr=cfg.lr,
            betas=check_betas(cfg),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            **kernel_kwargs(cfg, "adamw", device),
        )
    return MuonWithAdamW(muon, adamw)
