"""Pruners by name (`tune.pruner`): which running trials stop early.

A trial reports its monitored metric at each evaluation, with the training step as Optuna's
step, so `tune.min_resource` is counted in optimizer steps.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from hone.errors import ConfigError
from hone.registry import Registry
from hone.tune.settings import TuneConfig

PrunerBuilder = Callable[[TuneConfig], optuna.pruners.BasePruner]
PRUNERS: Registry[PrunerBuilder] = Registry("pruner", "tune.pruner")


@PRUNERS.register("none")
def _none(cfg: TuneConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


@PRUNERS.register("median")
def _median(cfg: TuneConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials)


@PRUNERS.register("successive-halving")
def _asha(cfg: TuneConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=cfg.min_resource or "auto", reduction_factor=cfg.reduction_factor
    )


@PRUNERS.register("hyperband")
def _hyperband(cfg: TuneConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(
        min_resource=cfg.min_resource or 1, reduction_factor=cfg.reduction_factor
    )


def resolve_pruner_name(cfg: TuneConfig, num_objectives: int) -> str:
    """'auto' -> median for one metric, none for several; pruning needs one metric."""
    if cfg.pruner == "auto":
        return "median" if num_objectives == 1 else "none"
    PRUNERS.get(cfg.pruner)
    if cfg.pruner != "none" and num_objectives > 1:
        raise ConfigError(
            f"pruning compares one metric, but tune.metric names {num_objectives}; "
            "set --pruner=none for several metrics"
        )
    return cfg.pruner


def build_pruner(cfg: TuneConfig, num_objectives: int) -> optuna.pruners.BasePruner:
    """The pruner `cfg.pruner` names."""
    return PRUNERS.get(resolve_pruner_name(cfg, num_objectives))(cfg)
