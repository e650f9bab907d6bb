"""`hone tune RECIPE` for every recipe: a default [tune.space] around the recipe's own values."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from hone.cli import main
from hone.config import recipe_names
from hone.optim.schedules import check_schedule
from hone.tune.configs import TrialConfigs
from hone.tune.space import SearchSpace
from tests.compress.conftest import QUIET, TINY_GPT, one_thread_in_tmp


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_has_a_space_that_holds_its_own_values(recipe: str) -> None:
    configs = TrialConfigs(recipe)
    space = SearchSpace.parse(configs.base.tune.space)
    assert len(space) >= 2
    configs.check(space)  # every end of every range builds a valid config
    for param in space.params:
        value, d = configs.value(param.path), param.distribution
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            assert value in [param.decode(c) for c in d.choices], param.path
        else:
            assert d.low <= value <= d.high, (param.path, value)
        for end in param.extremes():  # e.g. an lr below schedule.min_lr fails at the start
            cfg = configs.build({param.path: end})
            check_schedule(cfg.schedule, 1000, cfg.optim.lr)


# Overrides that make each recipe's trial a few steps (gpt2-small takes minutes even so: its
# space is checked above).
TINY = {
    "linreg": ["train.max_steps=3"],
    "mlp-digits": ["train.max_steps=3"],
    "cnn-digits": ["train.max_steps=3"],
    "gpt-shakespeare-char": [*TINY_GPT, "train.max_steps=2"],
    "gpt-shakespeare-baseline": [*TINY_GPT, "train.max_steps=2"],
}


@pytest.mark.parametrize("recipe", sorted(TINY))
def test_hone_tune_recipe(
    recipe: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    overrides = [f"--{o}" for o in [*TINY[recipe], *QUIET, "tune.report=false"]]
    args = ["tune", recipe, "--trials", "2", "--dir", str(tmp_path / "study"), *overrides]
    with one_thread_in_tmp(tmp_path_factory):
        assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"study {recipe}: 2 complete" in out
    assert (tmp_path / "study" / "best.toml").is_file()
