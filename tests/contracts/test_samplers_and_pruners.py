"""Every Optuna sampler in `SAMPLERS` and pruner in `PRUNERS`, by name, through the same
checks. A sampler (an optuna BaseSampler) proposes values inside the search space, the same
ones again for the same seed, goes on proposing while other trials still run (parallel
workers), and either optimizes several metrics or refuses them in one line naming the flag.
A pruner (an optuna BasePruner) stops a trial clearly worse than the others, except `none`,
and refuses several metrics. The config's help lists exactly the registered names."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from hone.errors import ConfigError
from hone.tune.pruners import PRUNERS, build_pruner, resolve_pruner_name
from hone.tune.samplers import SAMPLERS, SamplerContext, build_sampler
from hone.tune.settings import TuneConfig
from hone.tune.space import SearchSpace

SPACE = SearchSpace.parse(
    {
        "optim.lr": {"type": "float", "low": 0.01, "high": 1.0, "step": 0.01},
        "model.width": {"type": "int", "low": 2, "high": 8, "step": 2},
        "optim.name": {"choices": ["sgd", "adamw"]},
    }
)


def bowl(trial: optuna.Trial) -> float:
    values = SPACE.sample(trial, lambda path: None)
    return (values["optim.lr"] - 0.3) ** 2 + (values["model.width"] - 4) ** 2 / 10


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_runs_trials_inside_the_space(name: str) -> None:
    objectives = 2 if name == "nsga2" else 1
    cfg = TuneConfig(sampler=name, startup_trials=4)  # gp fits its model twice
    sampler = build_sampler(cfg, SamplerContext(SPACE, objectives, seed=3, parallel=False))
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    study = optuna.create_study(sampler=sampler, directions=["minimize"] * objectives)
    objective = bowl if objectives == 1 else (lambda t: (bowl(t), t.params["model.width"]))
    study.optimize(objective, n_trials=6)
    assert len(study.trials) == 6
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert 0.01 <= t.params["optim.lr"] <= 1.0 and t.params["model.width"] in (2, 4, 6, 8)


def test_same_seed_same_proposals_and_workers_differ() -> None:
    def proposals(seed: int) -> list[float]:
        ctx = SamplerContext(SPACE, 1, seed=seed, parallel=False)
        study = optuna.create_study(sampler=build_sampler(TuneConfig(sampler="random"), ctx))
        study.optimize(bowl, n_trials=4)
        return [t.params["optim.lr"] for t in study.trials]

    assert proposals(0) == proposals(0) != proposals(1)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_repeats_itself_and_proposes_while_trials_run(name: str) -> None:
    def proposals(seed: int) -> list[dict[str, object]]:
        ctx = SamplerContext(SPACE, 1, seed=seed, parallel=True)
        cfg = TuneConfig(sampler=name, startup_trials=2)
        study = optuna.create_study(sampler=build_sampler(cfg, ctx))
        for _ in range(2):  # two workers: both trials asked before either is told
            running = [study.ask(), study.ask()]
            for trial in running:
                study.tell(trial, bowl(trial))
        return [t.params for t in study.trials]

    first = proposals(0)
    assert len(first) == 4 and proposals(0) == first


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_takes_several_metrics_or_refuses_them_in_one_line(name: str) -> None:
    ctx = SamplerContext(SPACE, 2, seed=0, parallel=False)
    try:
        sampler = build_sampler(TuneConfig(sampler=name, startup_trials=2), ctx)
    except ConfigError as error:
        assert "\n" not in str(error) and "--sampler=" in str(error)
        return
    study = optuna.create_study(sampler=sampler, directions=["minimize", "minimize"])
    study.optimize(lambda t: (bowl(t), t.params["model.width"]), n_trials=3)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3


def test_the_config_lists_exactly_the_registered_names() -> None:
    fields = {f.name: f.metadata["help"] for f in dataclasses.fields(TuneConfig)}
    samplers = fields["sampler"].split(":", 1)[1].replace(" ", "").split(",")
    assert sorted(samplers) == SAMPLERS.names()
    for name in PRUNERS.names():
        assert f" {name}" in fields["pruner"], name


def test_single_objective_samplers_refuse_several_metrics() -> None:
    with pytest.raises(ConfigError, match="set --sampler=nsga2"):
        build_sampler(TuneConfig(sampler="cmaes"), SamplerContext(SPACE, 2, 0, False))


def test_grid_needs_a_finite_grid() -> None:
    space = SearchSpace.parse({"optim.lr": {"type": "float", "low": 0.01, "high": 1.0}})
    with pytest.raises(ConfigError, match=r"tune.space\['optim.lr'\] has no finite grid"):
        build_sampler(TuneConfig(sampler="grid"), SamplerContext(space, 1, 0, False))


@pytest.mark.parametrize("name", PRUNERS.names())
def test_every_pruner_stops_a_clearly_worse_trial(name: str) -> None:
    pruner = build_pruner(TuneConfig(pruner=name, startup_trials=1, min_resource=1), 1)
    assert isinstance(pruner, optuna.pruners.BasePruner)
    study = optuna.create_study(pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0))
    pruned_at = []
    for value in range(1, 11):  # each trial worse than all before it
        trial = study.ask()
        stop = None
        for step in range(1, 28):
            trial.report(value, step)
            if trial.should_prune():
                stop = step
                break
        pruned_at.append(stop)
        if stop:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    assert pruned_at[0] is None  # nothing to compare the first trial with
    if name == "none":
        assert pruned_at == [None] * 10
    else:
        assert any(pruned_at), pruned_at


@pytest.mark.parametrize("name", PRUNERS.names())
def test_every_pruner_but_none_refuses_several_metrics_in_one_line(name: str) -> None:
    if name == "none":
        assert resolve_pruner_name(TuneConfig(pruner=name), 2) == "none"
        return
    with pytest.raises(ConfigError, match="set --pruner=none") as error:
        build_pruner(TuneConfig(pruner=name), 2)
    assert "\n" not in str(error.value)


def test_pruner_names_and_auto() -> None:
    assert resolve_pruner_name(TuneConfig(), 1) == "median"
    assert resolve_pruner_name(TuneConfig(), 2) == "none"
    with pytest.raises(ConfigError, match="set --pruner=none"):
        resolve_pruner_name(TuneConfig(pruner="median"), 2)
    with pytest.raises(ConfigError, match="hyperband, median, none, successive-halving"):
        resolve_pruner_name(TuneConfig(pruner="asha"), 1)
    with pytest.raises(ConfigError, match="cmaes, gp, grid, nsga2, qmc, random, tpe"):
        build_sampler(TuneConfig(sampler="bayes"), SamplerContext(SPACE, 1, 0, False))
