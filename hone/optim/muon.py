"""Muon for the hidden weight matrices, AdamW for everything else, as one optimizer.

Which parameters Muon takes: every trainable 2-D parameter except
  - the weights of `nn.Embedding` / `nn.EmbeddingBag` modules (lookup tables, not linear maps),
  - the output head: the weight of the last `nn.Linear` in `model.modules()` order and of any
    module whose name ends in "head" (e.g. `lm_head`); a head tied to the token embedding is
    the embedding's parameter, so it is excluded by the first rule.
AdamW takes the rest: embeddings, the head, norms, biases and conv kernels. Muon's
orthogonalized update suits matrices that map one hidden space to another; the tables and the
head are better served by AdamW (as in the Muon authors' recipe).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from hone.config import OptimConfig
from hone.errors import ConfigError
from hone.optim.base import check_betas, kernel_kwargs, register_optimizer, trainable_parameters


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


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon and torch.optim.AdamW stepped together, seen as one `Optimizer`.

    It subclasses `Optimizer` (LRScheduler accepts only those) and shares its `param_groups`
    (Muon's groups first, then AdamW's: the same dict objects) and its `state` with the inner
    optimizers. A scheduler's lr changes thus reach both, and the inherited `state_dict()`,
    `load_state_dict()` and `zero_grad()` work unchanged, in torch's standard format
    (parameters numbered across both).
    """

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW | None) -> None:
        self.inner: list[torch.optim.Optimizer] = [muon] + ([adamw] if adamw else [])
        groups = [group for opt in self.inner for group in opt.param_groups]
        # The lr in defaults is AdamW's (optim.lr): schedules read it as schedule.min_lr's base.
        lr = (adamw or muon).defaults["lr"]
        super().__init__(groups, {"lr": lr})
        self._share_with_inner()

    def _share_with_inner(self) -> None:
        start = 0
        for opt in self.inner:
            end = start + len(opt.param_groups)
            opt.param_groups = self.param_groups[start:end]
            opt.state = self.state
            start = end

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One step of each inner optimizer; returns the closure's loss, if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.inner:
            opt.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Optimizer.load_state_dict replaces self.param_groups and self.state with new objects;
        # hand those to the inner optimizers again.
        super().load_state_dict(state_dict)
        self._share_with_inner()


@register_optimizer("muon")
def build_muon(cfg: OptimConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """Muon (optim.muon_lr, optim.muon_momentum) + AdamW (optim.lr, optim.betas)."""
    muon_params, adamw_params = split_muon_params(model)
    if not muon_params:
        raise ConfigError(
            "optim.name='muon' needs 2-D hidden weight matrices (weights of nn.Linear layers "
            "other than the output head), but the model has none; set --optim.name=adamw"
        )
    muon = torch.optim.Muon(
        muon_params, lr=cfg.muon_lr, momentum=cfg.muon_momentum, weight_decay=cfg.weight_decay
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
