"""Where a non-finite step started: the NaN guard's step, re-run with hooks.

When the guard skips a step (nothing was changed), `NanProbe` runs the same batch again
through the unwrapped model with a forward hook on every module and a hook on every
parameter's gradient, under a forked RNG (dropout draws the same masks; the run's RNG
streams do not move). The first of: a non-finite input, weight, module output (children
fire before their parents, so the innermost, earliest module), the loss, or a parameter's
gradient (in the order backward computes them) is the origin. Whether values grew over the
steps before (logged losses rising, weights grown) or jumped at once tells a learning rate
that slowly diverged from one bad batch or one bad operation. One record per probed step in
stats.jsonl, `kind = "non_finite"`; the first few steps of a run only.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import torch

from hone.engine.observers import Observer
from hone.engine.stats import StatsFile, clean

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer

MAX_PROBES = 3  # per run: a diverged run skips many steps, the first ones say where it began
GROWTH = 3.0  # logged loss or weight norm grown this many times before the fault: "grew"


def _finite(t: Any) -> bool:
    t = t[0] if isinstance(t, tuple) and t else t
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        return True
    return bool(torch.isfinite(t).all())


def _weight_norm(model: torch.nn.Module) -> float:
    norms = [p.detach().float().norm() for p in model.parameters()]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


class NanProbe(Observer):
    """Re-runs a non-finite step's first micro-batch to find where the non-finite began."""

    def __init__(self, file: StatsFile) -> None:
        self.file = file
        self.probes = 0
        self.initial_weight_norm = 0.0
        self.logged: deque[tuple[int, float]] = deque(maxlen=20)  # (step, train loss)

    def on_fit_start(self, trainer: Trainer) -> None:
        self.initial_weight_norm = _weight_norm(trainer.model)

    def on_log(self, trainer: Trainer, event: dict[str, Any]) -> None:
        if event.get("split") == "train" and isinstance(event.get("loss"), float):
            self.logged.append((event["step"], event["loss"]))

    def on_non_finite(self, trainer: Trainer, batches: list[Any]) -> None:
        if self.probes >= MAX_PROBES:
            return
        self.probes += 1
        origin = self.locate(trainer, batches[0])
        weight_norm = _weight_norm(trainer.model)
        ratio = weight_norm / self.initial_weight_norm if self.initial_weight_norm else 1.0
        finite = [loss for _, loss in self.logged if loss == loss and abs(loss) != float("inf")]
        loss_growth = finite[-1] / min(finite) if len(finite) >= 2 and min(finite) > 0 else 1.0
        grew = loss_growth >= GROWTH or ratio >= GROWTH
        self.file.write(
            {
                "step": trainer.state.step + 1,
                "kind": "non_finite",
                **origin,
                "trend": "grew" if grew else "jumped",
                "loss_growth": clean(loss_growth),
                "weight_norm_ratio": clean(ratio),
                "logged_losses": [[s, clean(v)] for s, v in list(self.logged)[-5:]],
            }
        )

    def locate(self, trainer: Trainer, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        """{"origin": input|weights|module|loss|gradient|not_reproduced, "name": ..., ...}"""
        model, device = trainer.model, trainer.device
        x, y = batch[0].to(device), batch[1].to(device)
        if not _finite(x):
            return {"origin": "input", "name": "batch"}
        for name, p in model.named_parameters():
            if not _finite(p.detach()):
                return {"origin": "weights", "name": name}
        first: dict[str, Any] = {}
        handles = []

        def module_hook(name: str) -> Any:
            def hook(module: torch.nn.Module, inputs: Any, output: Any) -> None:
                if not first and not _finite(output):
                    first.update(origin="module", name=name or "model", type=type(module).__name__)

            return hook

        def grad_hook(name: str) -> Any:
            def hook(grad: torch.Tensor) -> None:
                if not first and not _finite(grad):
                    first.update(origin="gradient", name=name)

            return hook

        for name, module in model.named_modules():
            handles.append(module.register_forward_hook(module_hook(name)))
        for name, p in model.named_parameters():
            if p.requires_grad:
                handles.append(p.register_hook(grad_hook(name)))
        devices = [device] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), trainer.precision.autocast():
                out = model(x)
                stepper = trainer.stepper
                if stepper.teacher is None:
                    loss = trainer.loss_fn(out, y)
                else:
                    loss = trainer.loss_fn(out, y, stepper._teach(x))
                if not first and not _finite(loss):
                    first.update(origin="loss", name=trainer.cfg.loss.name)
                if not first:
                    (loss + stepper.penalty()).backward()
        finally:
            for handle in handles:
                handle.remove()
            trainer.optimizer.zero_grad(set_to_none=True)
        return first or {"origin": "not_reproduced", "name": ""}
