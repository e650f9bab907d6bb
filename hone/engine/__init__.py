"""The training engine: `train(cfg)` for Python users, the same path `hone train` takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hone.config import Config
from hone.engine.inference import LoadedRun
from hone.engine.observers import Observer
from hone.engine.precision import Precision
from hone.engine.trainer import Trainer


def train(cfg: Config, run_dir: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (default runs/<recipe>-<timestamp>); return the summary."""
    return Trainer(config=cfg, run_dir=run_dir, **kwargs).fit()  # the trainer names the folder


__all__ = ["LoadedRun", "Observer", "Precision", "Trainer", "train"]
