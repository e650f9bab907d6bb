"""Hyperparameter tuning with Optuna: `hone tune` for Python users.

from hone.tune import TuneOptions, tune
result = tune(TuneOptions("examples/tune-linreg.toml", trials=20))
"""

from __future__ import annotations

from hone.tune.leaderboard import show
from hone.tune.pruners import PRUNERS, build_pruner
from hone.tune.samplers import SAMPLERS, build_sampler
from hone.tune.space import PARAM_TYPES, Param, SearchSpace, parse_param
from hone.tune.study import TuneOptions, TuneResult, TuningIncomplete, tune

__all__ = [
    "PARAM_TYPES",
    "PRUNERS",
    "SAMPLERS",
    "Param",
    "SearchSpace",
    "TuneOptions",
    "TuneResult",
    "TuningIncomplete",
    "build_pruner",
    "build_sampler",
    "parse_param",
    "show",
    "tune",
]
