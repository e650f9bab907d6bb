"""Configs that build on recipes and files: `base = ...`, chains, cycles, what is replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from hone.config import load_config, recipe_names, to_dict
from hone.config.sources import recipe_text
from hone.errors import ConfigError
from tests.everyday.conftest import hone

FLAT = Path(__file__).parent / "flat_recipes"


def without_space(cfg: dict) -> dict:
    return {**cfg, "tune": {k: v for k, v in cfg["tune"].items() if k != "space"}}


@pytest.mark.parametrize("recipe", sorted(p.stem for p in FLAT.glob("*.toml")))
def test_recipes_that_build_on_others_resolve_as_before(recipe: str) -> None:
    """flat_recipes/ holds these recipes as they were written out in full, before they used
    `base`: the resolved configs are identical but for the search space added since."""
    assert "\nbase = " in recipe_text(recipe)
    now, before = to_dict(load_config(recipe)), to_dict(load_config(str(FLAT / f"{recipe}.toml")))
    assert without_space(now) == without_space(before)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_file_sets_only_what_differs_from_its_base(tmp_path: Path) -> None:
    path = write(tmp_path / "my.toml", 'base = "mlp-digits"\n[optim]\nlr = 0.01\n')
    cfg, recipe = load_config(str(path)), load_config("mlp-digits")
    assert cfg.optim.lr == 0.01 and cfg.optim.weight_decay == recipe.optim.weight_decay
    assert cfg.model == recipe.model and cfg.schedule == recipe.schedule
    # recipe and description name the file itself, not its base
    assert cfg.recipe == "my" and cfg.description == ""


def test_bases_chain_through_paths_relative_to_each_file(tmp_path: Path) -> None:
    write(tmp_path / "shared" / "common.toml", 'base = "linreg"\n[train]\nmax_epochs = 3\n')
    write(tmp_path / "exp" / "mid.toml", 'base = "../shared/common.toml"\n[optim]\nlr = 0.5\n')
    top = write(tmp_path / "exp" / "top.toml", 'base = "mid.toml"\n[optim]\nname = "adamw"\n')
    cfg = load_config(str(top))
    assert (cfg.model.name, cfg.train.max_epochs, cfg.optim.lr, cfg.optim.name) == (
        "linear",
        3,
        0.5,
        "adamw",
    )


def test_a_space_and_free_form_tables_are_replaced_whole(tmp_path: Path) -> None:
    path = write(
        tmp_path / "my.toml",
        'base = "mlp-digits"\n[tune.space]\n"optim.lr" = {type = "float", low = 0.001, high = 0.1}\n',
    )
    assert list(load_config(str(path)).tune.space) == ["optim.lr"]
    data = '[data]\nname = "custom"\ntarget = "my_data:load"\n'  # kwargs: a custom data set's
    write(tmp_path / "a.toml", f'base = "linreg"\n{data}kwargs = {{x = 1, y = 2}}\n')
    path = write(tmp_path / "b.toml", 'base = "a.toml"\n[data]\nkwargs = {z = 3}\n')
    assert load_config(str(path)).data.kwargs == {"z": 3}


def test_another_model_family_drops_the_keys_it_does_not_have(tmp_path: Path) -> None:
    path = write(tmp_path / "my.toml", 'base = "mlp-digits"\n[model]\nname = "cnn"\n')
    model = to_dict(load_config(str(path)))["model"]
    assert model["name"] == "cnn" and "width" not in model
    assert model["dropout"] == 0.1  # the recipe's, a key both families have


@pytest.mark.parametrize(
    ("files", "words"),
    [
        (
            {"a.toml": 'base = "b.toml"\n', "b.toml": 'base = "a.toml"\n'},
            "a.toml -> b.toml -> a.toml",
        ),
        ({"a.toml": 'base = "a.toml"\n'}, "cycle"),
        ({"a.toml": 'base = "mlp-digit"\n'}, "did you mean 'mlp-digits'"),
        ({"a.toml": 'base = "none.toml"\n'}, "none.toml does not exist"),
        ({"a.toml": "base = 3\n"}, "base must be a recipe name or a path"),
    ],
)
def test_a_cycle_or_a_missing_base_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], words: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        load_config("a.toml")


def test_config_show_prints_the_resolved_whole(tmp_path: Path) -> None:
    write(tmp_path / "my.toml", 'base = "mlp-digits"\n[optim]\nlr = 0.01\n')
    write(tmp_path / "loop.toml", 'base = "loop.toml"\n')
    shown = hone("config", "show", "my.toml", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert not [line for line in lines if line.startswith("base =")]  # resolved, not pointed to
    assert "lr = 0.01" in lines and "width = 128" in lines
    loop = hone("config", "show", "loop.toml", cwd=tmp_path)
    assert loop.returncode == 2 and len(loop.stderr.strip().splitlines()) == 1
    assert loop.stderr.startswith("hone: error: bases form a cycle")


def test_every_recipe_still_loads() -> None:
    for name in recipe_names():
        assert load_config(name).recipe == name
