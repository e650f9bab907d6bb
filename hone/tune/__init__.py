"""Hyperparameter tuning with Optuna: `hone tune` for Python users.

from hone.tune import TuneOptions, tune
result = tune(TuneOptions("examples/tune-linreg.toml", trials=20))
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# Loaded on first use: hone.config imports hone.tune.settings (the [tune] table) for every
# config it builds, which must not load Optuna and the engine with it.
_PUBLIC = {
    "show": "hone.tune.leaderboard",
    "PRUNERS": "hone.tune.pruners",
    "build_pruner": "hone.tune.pruners",
    "SAMPLERS": "hone.tune.samplers",
    "build_sampler": "hone.tune.samplers",
    "PARAM_TYPES": "hone.tune.space",
    "Param": "hone.tune.space",
    "SearchSpace": "hone.tune.space",
    "parse_param": "hone.tune.space",
    "TuneOptions": "hone.tune.study",
    "TuneResult": "hone.tune.study",
    "TuningIncomplete": "hone.tune.study",
    "tune": "hone.tune.study",
}

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'hone.tune' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value  # once: later lookups do not come here
    return value
