"""Optimizers and learning-rate schedules, chosen by name from the config.

`build_optimizer` and `optimizer_kind` look up `optim.name` in `OPTIMIZERS`; `build_schedule`
and `lr_factor` look up `schedule.name` in `SCHEDULES`. Importing this package registers every
implementation.
"""

from hone.optim import muon, newton, torch_optimizers  # noqa: F401  (register the optimizers)
from hone.optim.base import (
    OPTIMIZERS,
    OptimizerEntry,
    OptimizerKind,
    build_optimizer,
    optimizer_kind,
    register_optimizer,
)
from hone.optim.muon import MuonWithAdamW, split_muon_params
from hone.optim.newton import Newton
from hone.optim.schedules import SCHEDULES, build_schedule, lr_factor

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "MuonWithAdamW",
    "Newton",
    "OptimizerEntry",
    "OptimizerKind",
    "build_optimizer",
    "build_schedule",
    "lr_factor",
    "optimizer_kind",
    "register_optimizer",
    "split_muon_params",
]
