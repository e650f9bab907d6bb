"""Helpers for the tuning tests: small linreg configs with a [tune.space] table."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import tomli_w

from hone.config.loader import read_source

# linreg, short enough that the learning rate decides the validation loss (see test_tune.py).
FAST = {"max_steps": 15, "max_epochs": 0, "eval_every": 5}


def linreg_config(
    path: Path, space: dict[str, Any], train: dict[str, Any] | None = None, **tune: Any
) -> Path:
    """Write the linreg recipe with `space`, `train` settings and [tune] keys to `path`."""
    raw, _ = read_source("linreg")
    raw = copy.deepcopy(raw)
    raw["train"].update(FAST if train is None else train)
    raw["log"] = {"tensorboard": False}
    raw["tune"] = {"space": space, "report": False, **tune}
    path.write_text(tomli_w.dumps(raw))
    return path


LR_SPACE = {"optim.lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}}
