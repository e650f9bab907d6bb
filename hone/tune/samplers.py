"""Samplers by name (`tune.sampler`): how each trial's parameters are chosen."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from hone.errors import ConfigError
from hone.registry import Registry
from hone.tune.settings import TuneConfig
from hone.tune.space import SearchSpace


@dataclass(frozen=True)
class SamplerContext:
    """What a sampler may need besides the tune config."""

    space: SearchSpace
    num_objectives: int
    seed: int  # tune.seed + the worker's index, so parallel workers do not propose alike
    parallel: bool  # several workers share the study


SamplerBuilder = Callable[[TuneConfig, SamplerContext], optuna.samplers.BaseSampler]
SAMPLERS: Registry[SamplerBuilder] = Registry("sampler", "tune.sampler")


def _single_objective(name: str, ctx: SamplerContext) -> None:
    if ctx.num_objectives > 1:
        raise ConfigError(
            f"the {name} sampler optimizes one metric, got {ctx.num_objectives}; "
            "set --sampler=nsga2 (or tpe, gp, random, qmc) for several"
        )


@SAMPLERS.register("tpe")
def _tpe(cfg: TuneConfig, ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    # multivariate + group model the parameters jointly and handle conditional entries;
    # constant_liar keeps parallel workers from proposing the same point while others run.
    return optuna.samplers.TPESampler(
        n_startup_trials=cfg.startup_trials,
        multivariate=True,
        group=True,
        constant_liar=ctx.parallel,
        seed=ctx.seed,
    )


@SAMPLERS.register("random")
def _random(cfg: TuneConfig, ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=ctx.seed)


@SAMPLERS.register("grid")
def _grid(cfg: TuneConfig, ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GridSampler(ctx.space.grid(), seed=ctx.seed)


@SAMPLERS.register("cmaes")
def _cmaes(cfg: TuneConfig, ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    _single_objective("cmaes", ctx)
    return optuna.samplers.CmaEsSampler(
        n_startup_trials=cfg.startup_trials, seed=ctx.seed, warn_independent_sampling=False
    )


@SAMPLERS.register("gp")
def _gp(cfg: TuneConfig, ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(
        n_startup_trials=cfg.startup_trials, seed=ctx.seed, warn_independent_sampling=False
    )


@SAMPLERS.register("qmc")
def _qmc(cfg: TuneConfig, ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    return optuna.samplers.QMCSampler(seed=ctx.seed, warn_independent_sampling=False)


@SAMPLERS.register("nsga2")
def _nsga2(cfg: TuneConfig, ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=ctx.seed)


def build_sampler(cfg: TuneConfig, ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    """The sampler `cfg.sampler` names."""
    builder = SAMPLERS.get(cfg.sampler)
    with warnings.catch_warnings():
        # Optuna marks TPE's `group` and a few samplers experimental; they are what we use.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return builder(cfg, ctx)
