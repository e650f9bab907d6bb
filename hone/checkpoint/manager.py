"""A run's checkpoints: saving, choosing the newest valid one, retention, cleanup.

Only the main process writes the trainer state, the manifest and renames; every process calls
`save` so that a sharded `StateIO` can write its part (the distributed trainer passes a
`barrier` that makes rank 0 wait for the others before it seals the directory).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hone.checkpoint.format import (
    MANIFEST,
    TMP_PREFIX,
    CorruptCheckpoint,
    maybe_crash,
    parse_step,
    seal,
    step_dir_name,
    verify,
    write_json,
)
from hone.checkpoint.io import FullStateIO, StateIO
from hone.checkpoint.state import flatten, unflatten

TRAINER_TENSORS, TRAINER_JSON = "trainer.safetensors", "trainer.json"


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint directory."""

    path: Path
    step: int
    manifest: dict[str, Any]


def remove(path: Path) -> None:
    """Delete a checkpoint so that it vanishes at once: a crash mid-delete leaves a .tmp-*."""
    doomed = path.with_name(f"{TMP_PREFIX}del-{path.name}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


class CheckpointManager:
    """The `checkpoints/` folder of one run."""

    def __init__(
        self,
        root: Path,
        keep_last: int = 3,
        keep_best: bool = False,
        monitor: str = "val_loss",
        mode: str = "min",
        is_main: bool = True,
        io: StateIO | None = None,
        barrier: Callable[[], None] = lambda: None,
    ) -> None:
        assert mode in ("min", "max"), mode
        self.root = Path(root)
        self.keep_last, self.keep_best = keep_last, keep_best
        self.monitor, self.mode = monitor, mode
        self.is_main = is_main
        self.io: StateIO = io or FullStateIO(is_main)
        self.barrier = barrier

    # ----------------------------------------------------------------- finding
    def step_dirs(self) -> list[tuple[int, Path]]:
        """(step, directory) of every step-NNNNNNN folder, oldest first; valid or not."""
        if not self.root.is_dir():
            return []
        found = [(parse_step(p.name), p) for p in self.root.iterdir() if p.is_dir()]
        return sorted((step, p) for step, p in found if step is not None)

    def newest_valid(self) -> Checkpoint | None:
        """The newest checkpoint that verifies; a damaged newer one is skipped with a warning.

        A checkpoint holding a file hone did not write raises `UnsafeCheckpoint` instead.
        """
        for step, path in reversed(self.step_dirs()):
            try:
                return Checkpoint(path, step, verify(path))
            except CorruptCheckpoint as e:
                warnings.warn(
                    f"skipping damaged checkpoint {path.name}: {e}; using an older one",
                    stacklevel=2,
                )
        return None

    def clean_partial(self) -> None:
        """Remove what interrupted saves left behind (.tmp-* folders)."""
        if self.is_main and self.root.is_dir():
            for path in self.root.glob(f"{TMP_PREFIX}*"):
                shutil.rmtree(path, ignore_errors=True)

    def drop_newer_than(self, step: int) -> None:
        """Remove checkpoints after `step` (damaged ones, or a timeline being redone)."""
        if self.is_main:
            for s, path in self.step_dirs():
                if s > step:
                    remove(path)

    # ----------------------------------------------------------------- saving
    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        trainer_state: dict[str, Any],
        monitor_value: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """Write checkpoint `step` atomically, then apply the retention policy.

        `monitor_value` (the monitored metric measured at this step, if any) decides which
        checkpoint is the best; `extra` (JSON-able) goes into the manifest.
        """
        tmp = self.root / f"{TMP_PREFIX}{step_dir_name(step)}"
        final = self.root / step_dir_name(step)
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        self.io.save(model, optimizer, tmp)
        self.barrier()
        if self.is_main:
            maybe_crash("between_files", step)
            tree, tensors = flatten(trainer_state)
            save_file(tensors, str(tmp / TRAINER_TENSORS))
            write_json(tmp / TRAINER_JSON, tree)
            finite = monitor_value is not None and math.isfinite(monitor_value)
            monitor = {"name": self.monitor, "value": monitor_value if finite else None}
            seal(tmp, final, step, {"monitor": monitor, **(extra or {})})
            self.prune()
        self.barrier()
        return final

    def load(
        self, checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        """Load weights and optimizer state in place; return the trainer state."""
        self.io.load(model, optimizer, checkpoint.path)
        tensors = {
            k: v.clone() for k, v in load_file(str(checkpoint.path / TRAINER_TENSORS)).items()
        }
        tree = json.loads((checkpoint.path / TRAINER_JSON).read_text())
        return unflatten(tree, tensors)

    # ----------------------------------------------------------------- retention
    def _monitor_value(self, path: Path) -> float | None:
        try:
            return json.loads((path / MANIFEST).read_text())["monitor"]["value"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def best(self) -> tuple[int, float] | None:
        """(step, value) of the checkpoint with the best monitored metric, if any has one."""
        scored = [
            (step, v)
            for step, path in self.step_dirs()
            if (v := self._monitor_value(path)) is not None
        ]
        if not scored:
            return None
        pick = min if self.mode == "min" else max
        return pick(scored, key=lambda sv: sv[1])  # on a tie, the earliest

    def is_better(self, value: float | None) -> bool:
        """Whether `value` beats every checkpoint kept so far (for saving a new best)."""
        if value is None or not math.isfinite(value):
            return False
        best = self.best()
        if best is None:
            return True
        return value < best[1] if self.mode == "min" else value > best[1]

    def prune(self) -> None:
        """Keep the newest `keep_last` checkpoints, and the best one when `keep_best`."""
        dirs = self.step_dirs()
        keep = {step for step, _ in dirs[-self.keep_last :]}
        if self.keep_best and (best := self.best()) is not None:
            keep.add(best[0])
        for step, path in dirs:
            if step not in keep:
                remove(path)
