"""The `[tune]` table: what `hone tune` searches, how it samples and prunes, how it recovers.

Registered with hone.config by name, so the config tree holds it as `cfg.tune` while the
tuner owns it; this module imports nothing but the config helpers (no Optuna, no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hone.config.components import register_section
from hone.config.fields import opt


@register_section("tune")
@dataclass
class TuneConfig:
    space: dict[str, Any] = opt(
        {},
        "search space keyed by config path, e.g. 'optim.lr' = {type='float', low=1e-4, high=1e-1, log=true}",
    )
    metric: str = opt(
        "val_loss",
        "objective: a metric of the trial's run (val_loss, val_<metric>, num_parameters, ...); "
        "several, comma-separated, give a Pareto front",
    )
    direction: str = opt(
        "auto",
        "minimize or maximize (min/max) per metric, comma-separated like tune.metric; "
        "auto maximizes accuracy and r2 and minimizes the rest",
    )
    sampler: str = opt("tpe", "sampler: tpe, random, grid, cmaes, gp, qmc, nsga2")
    pruner: str = opt(
        "auto",
        "pruner: auto (median for one metric, none for several), none, median, "
        "successive-halving (ASHA), hyperband",
    )
    seed: int = opt(0, "seed of the sampler (worker i uses seed + i)")
    startup_trials: int = opt(
        5, "median pruner: trials that finish before any is pruned; tpe: random trials first", ge=0
    )
    min_resource: int = opt(
        0, "successive-halving/hyperband: steps before the first rung (0: auto)", ge=0
    )
    reduction_factor: int = opt(
        3, "successive-halving/hyperband: 1/factor of the trials go on at each rung", ge=2
    )
    heartbeat_seconds: int = opt(
        10, "how often a running trial records that its worker is alive", ge=1
    )
    grace_seconds: int = opt(
        0, "a trial silent this long is failed and retried (0: 3 x heartbeat_seconds)", ge=0
    )
    max_retry: int = opt(2, "retries of a trial whose worker died", ge=0)
    report: bool = opt(True, "write plots (HTML and PNG) into <tuning dir>/report at the end")
