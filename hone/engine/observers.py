"""Observers: the one way to watch and steer the training loop from outside.

An `Observer` overrides the hooks it needs; the loop calls each hook on every observer that
overrides it, and no other (the lists are made once), so a hook nobody implements costs
nothing per step. Hooks, in the order a run calls them:

    on_fit_start(trainer)                   before the first step of `run()` (once per run)
    on_step_start(trainer, batches)         a step's micro-batches, before the forward pass
    on_after_backward(trainer)              gradients present, before clipping and the step
    on_log(trainer, event)                  every event the run logs (train, val, test, ...)
    on_evaluation(trainer, step, metrics)   after a validation pass, {"val_loss": ...}
    on_step_end(trainer, loss)              after a good step, its logging and evaluation
    on_non_finite(trainer, batches)         a step the NaN guard skipped (nothing changed)
    on_fit_end(trainer, summary)            after the artifacts are written

An observer asks for a stop with `trainer.request_stop(reason)`: the loop ends after the
current step, evaluates and saves as at any bound. Raising from a hook aborts the run (the
tuner's pruning does): the run's files are closed, nothing more is written. Observers that
hold state (early stopping) implement `state_dict`/`load_state_dict` and name themselves with
`state_key`; they are then checkpointed with everything else.

The `trainer` a hook is given is whatever runs the loop: a Trainer, or the federated
server's FederatedRun, whose rounds are its steps (it calls on_fit_start, on_log,
on_evaluation, on_step_end once a round, on_fit_end). What every such owner exposes is
hone.engine.shell's `RunOwner`: cfg, files, task, state, total_steps, signal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer

HOOKS = (
    "on_fit_start",
    "on_step_start",
    "on_after_backward",
    "on_log",
    "on_evaluation",
    "on_step_end",
    "on_non_finite",
    "on_fit_end",
)


class Observer:
    """Base class: every hook does nothing."""

    state_key = ""  # non-empty: checkpointed under this name

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_step_start(
        self, trainer: Trainer, batches: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> None: ...

    def on_after_backward(self, trainer: Trainer) -> None: ...

    def on_log(self, trainer: Trainer, event: dict[str, Any]) -> None: ...

    def on_evaluation(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None: ...

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None: ...

    def on_non_finite(
        self, trainer: Trainer, batches: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> None: ...

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None: ...


class Observers:
    """The observers of one trainer, with a list per hook of those that implement it."""

    def __init__(self, observers: list[Observer]) -> None:
        self.all = list(observers)
        self._index()

    def _index(self) -> None:
        self.by_hook = {
            hook: [o for o in self.all if getattr(type(o), hook) is not getattr(Observer, hook)]
            for hook in HOOKS
        }
        # The hooks of the hot loop, iterated by the trainer directly (an empty list: no cost).
        self.step_start = self.by_hook["on_step_start"]
        self.after_backward = self.by_hook["on_after_backward"]
        self.step_end = self.by_hook["on_step_end"]

    def add(self, observer: Observer) -> None:
        self.all.append(observer)
        self._index()

    def call(self, hook: str, *args: Any) -> None:
        """Call `hook` on every observer that implements it, in the order they were given."""
        for observer in self.by_hook[hook]:
            getattr(observer, hook)(*args)

    def stateful(self) -> dict[str, Observer]:
        """The observers that checkpoint themselves, by their state key."""
        return {o.state_key: o for o in self.all if o.state_key}
