"""The search space parser: every kind of entry, conditions, and bad spaces as one-line errors."""

from __future__ import annotations

import json
import math
import tomllib

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hone.errors import ConfigError
from hone.tune.configs import TrialConfigs
from hone.tune.space import SearchSpace, parse_param
from tests.tune.conftest import LR_SPACE, linreg_config


def sample_many(space: SearchSpace, base: dict, n: int = 40) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.sample(trial, lambda p: base.get(p)))
        study.tell(trial, 0.0)
    return out


def test_float_uniform_log_and_step() -> None:
    assert parse_param(
        "optim.lr", {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}
    ).distribution == FloatDistribution(1e-4, 1e-1, log=True)
    assert parse_param(
        "model.dropout", {"type": "float", "low": 0, "high": 0.5}
    ).distribution == FloatDistribution(0.0, 0.5)
    p = parse_param("model.dropout", {"type": "float", "low": 0, "high": 0.5, "step": 0.25})
    assert p.distribution == FloatDistribution(0.0, 0.5, step=0.25)
    assert p.grid() == [0.0, 0.25, 0.5]


def test_int_step_and_log() -> None:
    p = parse_param("model.width", {"type": "int", "low": 16, "high": 64, "step": 16})
    assert p.distribution == IntDistribution(16, 64, step=16)
    assert p.grid() == [16, 32, 48, 64]
    q = parse_param("train.batch_size", {"type": "int", "low": 8, "high": 512, "log": True})
    assert q.distribution == IntDistribution(8, 512, log=True)
    values = [v["train.batch_size"] for v in sample_many(SearchSpace([q]), {}, 200)]
    # Log-uniform over [8, 512]: about half the samples fall below the geometric mean 64.
    below = sum(v < 64 for v in values) / len(values)
    assert 0.35 < below < 0.65 and min(values) >= 8 and max(values) <= 512


def test_categorical_any_config_value() -> None:
    names = parse_param("optim.name", {"choices": ["sgd", "adamw"]})
    assert names.distribution == CategoricalDistribution(["sgd", "adamw"])
    channels = parse_param(
        "model.channels", {"type": "categorical", "choices": [[8, 16], [16, 32]]}
    )
    # Lists travel through Optuna as JSON text and come back as lists.
    assert channels.distribution == CategoricalDistribution(["[8, 16]", "[16, 32]"])
    assert channels.decode("[16, 32]") == [16, 32]
    values = sample_many(SearchSpace([channels]), {}, 20)
    assert {json.dumps(v["model.channels"]) for v in values} == {"[8, 16]", "[16, 32]"}


def test_nested_tables_name_the_same_paths() -> None:
    flat = SearchSpace.parse({"optim.lr": {"type": "float", "low": 0.1, "high": 1.0}})
    nested = SearchSpace.parse({"optim": {"lr": {"type": "float", "low": 0.1, "high": 1.0}}})
    assert [p.path for p in flat.params] == [p.path for p in nested.params] == ["optim.lr"]


def test_conditional_entry_only_when_its_condition_holds() -> None:
    # Declared before the entry it depends on: the parser orders conditions first.
    space = SearchSpace.parse(
        {
            "optim.momentum": {
                "type": "float",
                "low": 0.0,
                "high": 0.9,
                "when": {"optim.name": "sgd"},
            },
            "optim.betas": {
                "choices": [[0.9, 0.99], [0.9, 0.999]],
                "when": {"optim.name": ["adam", "adamw"]},
            },
            "optim.name": {"choices": ["sgd", "adam", "adamw"]},
        }
    )
    assert [p.path for p in space.params][0] == "optim.name"
    samples = sample_many(space, {"optim.name": "adamw"}, 60)
    for s in samples:
        assert ("optim.momentum" in s) == (s["optim.name"] == "sgd")
        assert ("optim.betas" in s) == (s["optim.name"] in ("adam", "adamw"))
    assert {s["optim.name"] for s in samples} == {"sgd", "adam", "adamw"}


def test_condition_on_an_untuned_value_reads_the_base_config() -> None:
    space = SearchSpace.parse(
        {"optim.momentum": {"type": "float", "low": 0, "high": 0.9, "when": {"optim.name": "sgd"}}}
    )
    assert all("optim.momentum" in s for s in sample_many(space, {"optim.name": "sgd"}, 5))
    assert not any(sample_many(space, {"optim.name": "adamw"}, 5))


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"type": "float", "low": 1.0, "high": 0.1}, "low must not exceed high"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "low must be positive"),
        ({"type": "float", "low": 0.0}, "needs 'high'"),
        ({"type": "float", "low": "a", "high": 1.0}, "low must be a number"),
        (
            {"type": "float", "low": 0.1, "high": 1.0, "log": True, "step": 0.1},
            "step must be positive",
        ),
        ({"type": "int", "low": 1.5, "high": 4}, "low must be an integer"),
        (
            {"type": "int", "low": 2, "high": 64, "log": True, "step": 2},
            "step must be a positive integer",
        ),
        ({"type": "float", "low": 0.1, "high": 1.0, "lo": 3}, "unknown keys ['lo']"),
        ({"type": "floot", "low": 0.1, "high": 1.0}, "did you mean 'float'"),
        ({"low": 0.1, "high": 1.0}, "needs a type"),
        ({"choices": []}, "choices must be a non-empty list"),
        ({"choices": ["a", "a"]}, "choices must be distinct"),
        ({"type": "float", "low": 0, "high": 1, "when": "sgd"}, "when must be a table"),
    ],
)
def test_bad_entries_are_one_line_config_errors(entry: dict, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        SearchSpace.parse({"optim.lr": entry})
    message = str(err.value)
    assert words in message and "tune.space['optim.lr']" in message and "\n" not in message


def test_cyclic_conditions_are_rejected() -> None:
    with pytest.raises(ConfigError, match="depends on itself"):
        SearchSpace.parse(
            {
                "optim.lr": {
                    "type": "float",
                    "low": 0.1,
                    "high": 1,
                    "when": {"optim.momentum": 0.5},
                },
                "optim.momentum": {
                    "type": "float",
                    "low": 0,
                    "high": 0.9,
                    "when": {"optim.lr": 0.5},
                },
            }
        )


@pytest.mark.parametrize(
    ("space", "words"),
    [
        ({"optim.lrr": {"type": "float", "low": 0.1, "high": 1}}, "did you mean 'optim.lr'"),
        (
            {"optim.momentum": {"type": "float", "low": 0, "high": 1.5}},
            "optim.momentum must be less than 1",
        ),
        (
            {"train.batch_size": {"type": "float", "low": 1.5, "high": 4}},
            "train.batch_size must be an integer",
        ),
        ({"optim.name": {"choices": ["sgd", "nope"]}}, None),
        (
            {
                "optim.momentum": {
                    "type": "float",
                    "low": 0,
                    "high": 0.5,
                    "when": {"optim.nam": "sgd"},
                }
            },
            "did you mean 'optim.name'",
        ),
        (
            {"model.width": {"type": "int", "low": 2, "high": 8}},
            "model.width applies to model.name = 'mlp', not to 'linear'",
        ),
        (
            {
                "model.name": {"choices": ["linear", "mlp"]},
                "model.width": {"type": "int", "low": 2, "high": 8, "when": {"model.name": "mlp"}},
            },
            None,
        ),
    ],
)
def test_every_value_of_the_space_is_checked_against_the_config(tmp_path, space, words) -> None:
    configs = TrialConfigs(str(linreg_config(tmp_path / "c.toml", space)))
    parsed = SearchSpace.parse(space)
    if words is None:  # a registry name is checked when the component is built, not here
        configs.check(parsed)
        return
    with pytest.raises(ConfigError) as err:
        configs.check(parsed)
    assert words in str(err.value) and str(err.value).startswith("tune.space[")


def test_trial_config_sets_typed_values(tmp_path) -> None:
    custom_model = ["model.name=custom", "model.target=mypkg.models:build"]
    configs = TrialConfigs(
        str(linreg_config(tmp_path / "c.toml", LR_SPACE)), ["train.seed=7", *custom_model]
    )
    cfg = configs.build({"optim.lr": 0.25, "model.kwargs.hidden": [3, 4]})
    assert math.isclose(cfg.optim.lr, 0.25) and cfg.train.seed == 7
    assert cfg.model.kwargs == {"hidden": [3, 4]} and cfg.log.progress == "off"
    # best.toml is the recipe as the user would train it: without the trials' own settings.
    assert tomllib.loads(configs.toml({"optim.lr": 0.25}))["log"]["progress"] == "auto"


def test_cli_bad_space_exits_2_with_one_line(tmp_path, hone_cli) -> None:
    path = linreg_config(
        tmp_path / "bad.toml", {"optim.lr": {"type": "float", "low": 0, "high": 1, "log": True}}
    )
    result = hone_cli("tune", str(path), "--trials", "2", "--dir", str(tmp_path / "t"), timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tune.space['optim.lr'] low must be positive" in lines[0]
    assert not (tmp_path / "t" / "study.db").exists()
