from __future__ import annotations

import tomllib

import pytest

from hone.config import Config, field_help, load_config, recipe_names, to_toml
from hone.config.loader import apply_override
from hone.errors import ConfigError


def test_recipes_are_listed_and_load() -> None:
    names = recipe_names()
    assert {"linreg", "mlp-digits", "cnn-digits"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.recipe == name
        assert cfg.description


def test_overrides_are_typed() -> None:
    cfg = load_config(
        "mlp-digits",
        [
            "optim.lr=3e-4",
            "train.batch_size=32",
            "model.activation=gelu",
            "train.deterministic=true",
            "optim.betas=[0.9, 0.95]",
        ],
    )
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.train.batch_size == 32 and isinstance(cfg.train.batch_size, int)
    assert cfg.model.activation == "gelu"
    assert cfg.train.deterministic is True
    assert cfg.optim.betas == [0.9, 0.95]


def test_int_is_accepted_for_float_and_comma_lists() -> None:
    cfg = load_config("linreg", ["optim.lr=1", "optim.betas=0.8,0.9"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == [0.8, 0.9]


def test_config_show_round_trips(tmp_path) -> None:
    cfg = load_config("cnn-digits", ["optim.lr=0.01"])
    text = to_toml(cfg)
    path = tmp_path / "cnn.toml"
    path.write_text(text)
    again = load_config(str(path))
    assert again == cfg
    assert tomllib.loads(text)["optim"]["lr"] == 0.01


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["optim.lrr=0.1"], "did you mean 'optim.lr'"),
        (["optimm.lr=0.1"], "did you mean 'optim'"),
        (["optim.lr=abc"], "optim.lr must be a number"),
        (["train.batch_size=1.5"], "train.batch_size must be an integer"),
        (["train.deterministic=maybe"], "must be true or false"),
        (["optim.lr=-0.1"], "optim.lr must be greater than 0"),
        (["model.dropout=1.0"], "model.dropout must be less than 1"),
        (["train.batch_size=0"], "train.batch_size must be at least 1"),
        (["model.activation=swish"], "model.activation must be one of"),
        (["train.max_epochs=0"], "the run has no bound"),
        (["data.val_fraction=0.6", "data.test_fraction=0.5"], "below 1"),
        (["optim.lr"], "has no value"),
    ],
)
def test_bad_configs_name_the_key(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")) as info:
        load_config("mlp-digits", overrides)
    assert "\n" not in str(info.value)


def test_unknown_recipe_and_missing_file() -> None:
    with pytest.raises(ConfigError, match="did you mean 'mlp-digits'"):
        load_config("mlp-digit")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nothere.toml")


def test_override_into_free_table() -> None:
    raw: dict = {}
    apply_override(raw, "model.kwargs.hidden=7")
    assert raw == {"model": {"kwargs": {"hidden": 7}}}


def test_every_field_has_help() -> None:
    rows = field_help(Config)
    assert len(rows) > 80
    assert all(help_text for _, _, help_text in rows)
