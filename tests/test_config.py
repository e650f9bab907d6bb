from __future__ import annotations

import copy
import dataclasses
import pickle
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from hone.config import (
    Config,
    ModelConfig,
    field_help,
    from_dict,
    load_config,
    model_config_class,
    opt,
    recipe_names,
    register_model_config,
    to_dict,
    to_toml,
)
from hone.config.components import MODEL_CONFIGS
from hone.config.loader import apply_override
from hone.errors import ConfigError
from hone.models.gpt import GPTConfig
from tests.conftest import run_hone


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
    cfg = load_config("linreg", ["optim.name=adam", "optim.lr=1", "optim.betas=0.8,0.9"])
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


@pytest.mark.parametrize(
    ("source", "overrides", "needle"),
    [
        (
            "mlp-digits",
            ["model.pos=rope"],
            "model.pos applies to model.name = 'gpt', not to 'mlp'; "
            "remove it or set --model.name=gpt",
        ),
        ("linreg", ["model.dropout=0.1"], "model.dropout applies to model.name = 'cnn', 'gpt'"),
        ("gpt-shakespeare-char", ["model.depth=3"], "model.depth applies to model.name = 'mlp'"),
        (
            "mlp-digits",
            ["model.name=cnn", "model.depth=3"],
            "model.depth applies to model.name = 'mlp', not to",
        ),
        ("mlp-digits", ["model.n_hed=2"], "did you mean 'model.n_head'"),
        ("mlp-digits", ["model.arch=1"], "unknown config key 'model.arch'"),
        ("gpt-shakespeare-char", ["model.n_head=3"], "divisible by model.n_head"),
        ("linreg", ["model.name=custom"], "needs --model.target=package.module:factory"),
    ],
)
def test_a_key_of_another_family_is_refused(source: str, overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)) as info:
        load_config(source, overrides)
    assert "\n" not in str(info.value)


def test_a_key_of_another_family_is_refused_in_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    # `name` after the family's keys: the family is known only once the table is read
    path.write_text('[model]\nn_layer = 2\ndepth = 1\nname = "gpt"\n[train]\nmax_steps = 1\n')
    with pytest.raises(ConfigError, match="model.depth applies to model.name = 'mlp', not to"):
        load_config(str(path))
    path.write_text('[model]\nn_layer = 2\nname = "gpt"\n[train]\nmax_steps = 1\n')
    assert load_config(str(path)).model.n_layer == 2


def test_changing_the_family_keeps_the_keys_that_fit_both(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[model]\nname = "cnn"\ndropout = 0.1\n[train]\nmax_steps = 1\n')
    cfg = load_config(str(path), ["model.name=mlp", "model.activation=gelu"])
    assert cfg.model.name == "mlp" and cfg.model.dropout == 0.1
    assert cfg.model.activation == "gelu" and cfg.model.depth == 2
    # in Python, setting the name switches the family's config the same way
    cfg.model.name = "cnn"
    assert cfg.model.dropout == 0.1 and cfg.model.activation == "gelu"
    assert cfg.model.channels == [16, 32]
    with pytest.raises(AttributeError, match="model.depth applies to model.name = 'mlp'"):
        cfg.model.depth  # noqa: B018
    with pytest.raises(AttributeError, match="model.depth applies to model.name = 'mlp'"):
        cfg.model.depth = 3


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_round_trips_and_shows_only_its_keys(name: str, tmp_path: Path) -> None:
    cfg = load_config(name)
    text = to_toml(cfg)
    (tmp_path / "again.toml").write_text(text)
    assert load_config(str(tmp_path / "again.toml")) == cfg
    assert from_dict(to_dict(cfg)) == cfg
    model = tomllib.loads(text)["model"]
    assert "arch" not in model
    applies = {"name", "init", "init_std", "zero_bias"}
    applies |= {f.name for f in dataclasses.fields(model_config_class(cfg.model.name))}
    assert set(model) == applies


def test_python_configs_read_and_write_family_fields() -> None:
    cfg = ModelConfig(name="gpt", n_layer=2, n_head=2, n_embd=16, block_size=12)
    assert isinstance(cfg.arch, GPTConfig) and cfg.arch.n_layer == 2
    cfg.n_layer = 3
    assert cfg.arch.n_layer == 3 and cfg.context_length == 12
    assert ModelConfig(arch=GPTConfig(n_layer=5), name="gpt").n_layer == 5
    with pytest.raises(ConfigError, match="model.width applies to model.name = 'mlp'"):
        ModelConfig(name="gpt", width=3)
    assert copy.deepcopy(cfg) == cfg and pickle.loads(pickle.dumps(cfg)) == cfg
    assert dataclasses.replace(cfg, n_layer=1).n_layer == 1 and cfg.n_layer == 3


def test_context_length_of_each_family() -> None:
    assert load_config("gpt-shakespeare-char").model.context_length == 64
    assert load_config("mlp-digits").model.context_length == 0
    custom = ["model.name=custom", "model.target=pkg.mod:build", "model.context_length=128"]
    cfg = load_config("linreg", [*custom, "model.kwargs.hidden=8"])
    assert cfg.model.context_length == 128 and cfg.model.kwargs == {"hidden": 8}
    assert cfg.model.target == "pkg.mod:build"
    with pytest.raises(ConfigError, match="model.context_length must be at least 0"):
        load_config("linreg", [*custom, "model.context_length=-1"])
    with pytest.raises(ConfigError, match="model.context_length applies to model.name = 'custom'"):
        load_config("gpt-shakespeare-char", ["model.context_length=128"])


def test_a_user_family_registers_its_config() -> None:
    @dataclass
    class TinyConfig:
        hidden: int = opt(8, "units of the hidden layer", ge=1)

    register_model_config("tiny-test-family")(TinyConfig)
    try:
        cfg = load_config("linreg", ["model.name=tiny-test-family", "model.hidden=3"])
        assert cfg.model.hidden == 3 and isinstance(cfg.model.arch, TinyConfig)
        with pytest.raises(ConfigError, match="model.hidden must be at least 1"):
            load_config("linreg", ["model.name=tiny-test-family", "model.hidden=0"])
        assert ("model.hidden", 8, "tiny-test-family: units of the hidden layer") in field_help()
    finally:
        MODEL_CONFIGS._entries.pop("tiny-test-family")


def test_keys_of_each_family_are_listed_with_it() -> None:
    rows = {(key, help_text.split(":")[0]) for key, _, help_text in field_help(Config)}
    assert ("model.n_layer", "gpt") in rows and ("model.depth", "mlp") in rows
    assert ("model.dropout", "cnn") in rows and ("model.target", "custom") in rows
    keys = [key for key, _, _ in field_help(Config)]
    assert keys.index("model.zero_bias") < keys.index("model.n_layer")


def test_imports_go_downward_only() -> None:
    # hone.config must not import the models: a fresh interpreter that imports only
    # hone.config.schema still sees the families, through hone/__init__.py.
    code = (
        "import sys, hone.config.schema as s; "
        "assert 'hone.engine' not in sys.modules; "
        "print(type(s.ModelConfig(name='gpt').arch).__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "hone.models.gpt"


@pytest.mark.parametrize(
    ("recipe", "present"), [("gpt-shakespeare-char", True), ("mlp-digits", False)]
)
def test_config_show_prints_only_the_keys_that_apply(recipe: str, present: bool) -> None:
    out = run_hone("config", "show", recipe)
    assert out.returncode == 0, out.stderr
    assert ("n_layer = " in out.stdout) == present and ("depth = " in out.stdout) != present


def test_a_foreign_key_exits_2_with_one_line() -> None:
    out = run_hone("train", "mlp-digits", "--model.pos=rope")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "hone: error: model.pos applies to model.name = 'gpt', not to 'mlp'; "
        "remove it or set --model.name=gpt"
    ]


def test_an_override_of_model_name_drops_the_files_family_keys() -> None:
    cfg = load_config("gpt-shakespeare-char", ["model.name=linear", "data.name=digits"])
    assert cfg.model.name == "linear" and "n_layer" not in to_toml(cfg)
    cfg = load_config("mlp-digits", ["model.name=cnn", "model.kernel_size=5"])
    assert cfg.model.kernel_size == 5 and cfg.model.dropout == 0.1  # a key both families own stays
