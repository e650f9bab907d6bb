"""HONE_MAX_STEPS: an outside bound on steps and rounds, applied as the config loads."""

from __future__ import annotations

import pytest

from hone.config import load_config
from hone.config.loader import config_from
from hone.config.step_bound import MAX_STEPS_ENV, bound_count
from hone.errors import ConfigError


def test_unset_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_STEPS_ENV, raising=False)
    cfg = load_config("gpt-shakespeare-char")
    assert cfg.train.max_steps == 1000 and cfg.federated.rounds == 20


def test_bounds_steps_and_rounds_only_downward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_STEPS_ENV, "5")
    assert load_config("gpt-shakespeare-char").train.max_steps == 5
    assert load_config("gpt-shakespeare-speedrun").train.eval_batches == 5  # 0: whole split
    cfg = load_config("mlp-digits")  # bounded by epochs only: the bound is added
    assert (cfg.train.max_steps, cfg.train.max_epochs, cfg.federated.rounds) == (5, 40, 5)
    assert load_config("linreg", ["train.max_steps=3"]).train.max_steps == 3
    assert config_from(load_config("mlp-digits", ["train.max_steps=50"])).train.max_steps == 5


@pytest.mark.parametrize("value", ["0", "-1", "five"])
def test_a_bad_bound_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(MAX_STEPS_ENV, value)
    with pytest.raises(ConfigError, match=f"{MAX_STEPS_ENV} must be a positive integer"):
        load_config("mlp-digits")


def test_counts_such_as_trials_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_STEPS_ENV, raising=False)
    assert bound_count(50) == 50
    monkeypatch.setenv(MAX_STEPS_ENV, "5")
    assert (bound_count(50), bound_count(3), bound_count(0)) == (5, 3, 5)
