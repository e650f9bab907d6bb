"""Training batches from a user's loader (hone.data.loaders): `grad_accum` micro-batches a
step, epoch after epoch, checkpointed through the loader's own state where it has one."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from hone.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]


class LoaderBatcher:
    """Training batches from a loader: `grad_accum` micro-batches a step, epoch after epoch,
    on the training device. Checkpoints the loader's own state when it has one."""

    def __init__(
        self,
        loader: Iterable[Any],
        split: Callable[[Any], Batch],
        grad_accum: int,
        device: torch.device,
        ranks: int = 1,
    ) -> None:
        self.loader, self.split, self.grad_accum, self.device = loader, split, grad_accum, device
        # Under several processes each rank's batch is an equal share of the global batch
        # (hone.data.loader_shards): samples are counted for all of them.
        self.ranks = ranks
        try:
            batches = len(loader)  # type: ignore[arg-type]
        except TypeError:
            batches = 0  # an iterable without a length: epochs are not known in advance
        self.steps_per_epoch = batches // grad_accum
        if batches and not self.steps_per_epoch:
            raise ConfigError(
                f"train_data has {batches} batches an epoch, fewer than train.grad_accum "
                f"({grad_accum}); lower train.grad_accum"
            )
        self.epoch = 0
        self.position = 0  # batches consumed in this epoch
        self.samples = 0  # samples of the global batches handed out since this process started
        self._iterator: Iterator[Any] | None = None
        self._skip = 0  # batches to skip on the next iteration (resuming a plain iterable)
        self._epoch_batches = self.steps_per_epoch * grad_accum  # 0: unknown
        self._moves = device.type != "cpu"

    def _start(self) -> Iterator[Any]:
        # A sampler that draws a new order each epoch from its seed and the epoch (a
        # DistributedSampler: hone.data.loader_shards) is told the epoch, also on resume.
        set_epoch = getattr(getattr(self.loader, "sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.epoch)
        iterator = self._iterator = iter(self.loader)
        for _ in range(self._skip):
            next(iterator)
        self._skip = 0
        return iterator

    def _next(self) -> Any:
        iterator = self._iterator
        try:
            # `is None`, not truthiness: a loader iterator's __len__ fails on IterableDatasets.
            return next(iterator if iterator is not None else self._start())
        except StopIteration:
            self._iterator = None
            if self.position == 0:
                raise ConfigError("train_data yields no batches") from None
            self.epoch, self.position = self.epoch + 1, 0
            return self._next()

    def next_step(self) -> list[Batch]:
        if self.position >= self._epoch_batches > 0:
            # Sized: the epoch ends at a whole number of steps. The remainder is read to the
            # end rather than abandoned: a stateful loader's next epoch starts only then.
            for _ in self._iterator if self._iterator is not None else ():
                pass
            self._iterator = None
            self.epoch, self.position = self.epoch + 1, 0
        batches = []
        for _ in range(self.grad_accum):
            x, y = self.split(self._next())
            self.position += 1
            self.samples += len(x) * self.ranks
            if self._moves:  # a tensor already on the device would only cost a call
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            batches.append((x, y))
        return batches

    @property
    def epochs_done(self) -> float:
        if not self.steps_per_epoch:
            return float(self.epoch)
        return self.epoch + self.position / (self.steps_per_epoch * self.grad_accum)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"epoch": self.epoch, "position": self.position}
        if hasattr(self.loader, "state_dict"):
            state["loader"] = self.loader.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._iterator = None
        if "loader" in state and hasattr(self.loader, "load_state_dict"):
            self.loader.load_state_dict(state["loader"])
            return
        self._skip = self.position
        if self.position:
            warnings.warn(
                f"train_data ({type(self.loader).__name__}) cannot restore its position: the "
                f"first {self.position} batches of epoch {self.epoch} are skipped, which "
                "resumes exactly only if it yields the same batches in the same order each "
                "time (a torchdata StatefulDataLoader restores exactly)",
                stacklevel=2,
            )
