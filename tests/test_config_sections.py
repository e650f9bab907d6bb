"""Sections owned by their components (issue 25): each data set owns its `data.*` keys, the
trainer's concerns (checkpointing, NaN guard, profiler, sampling) theirs in [train]."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from hone.config import DataConfig, TrainConfig, load_config, to_dict
from hone.config.components import DATA_SETS, TRAINER_PARTS
from hone.data import DATASETS
from hone.errors import ConfigError


def test_every_data_set_declares_its_keys() -> None:
    assert set(DATASETS.names()) <= set(DATA_SETS.classes()), "a data set without a config"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["data.num_samples=50"], "data.num_samples applies to data.name = 'synthetic_linear', "
         "not to 'digits'; remove it or set --data.name=synthetic_linear"),
        (["data.name=csv", "data.cache_dir=x"], "data.cache_dir applies to data.name = "),
        (["data.name=shakespeare", "data.augment_shift=1"], "not to 'shakespeare'"),
    ],
)  # fmt: skip
def test_a_key_of_another_data_set_is_refused(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config("mlp-digits", overrides)
    with pytest.raises(AttributeError, match="applies to data.name"):
        DataConfig().num_samples  # noqa: B018


def test_a_foreign_data_key_exits_2_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hone", "config", "show", "mlp-digits", "--data.noise=0.5"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "data.noise applies to data.name = 'synthetic_linear'" in done.stderr


def test_a_data_set_reads_its_keys_flat_and_switching_keeps_the_shared_ones() -> None:
    cfg = load_config("linreg", ["data.num_samples=64", "data.val_fraction=0.2"])
    assert cfg.data.num_samples == 64 and to_dict(cfg)["data"]["num_samples"] == 64
    cfg.data.name = "csv"  # csv has no num_samples; val_fraction is every data set's
    assert cfg.data.val_fraction == 0.2 and cfg.data.path == "" and not hasattr(cfg.data, "noise")
    on_npz = load_config("mlp-digits", ["data.augment_shift=1", "data.name=npz"])
    assert on_npz.data.augment_shift == 1  # both image data sets have it


def test_trainer_parts_read_write_and_replace_flat() -> None:
    assert set(TRAINER_PARTS.classes()) == {"checkpointing", "guard", "profiler", "sampling"}
    cfg = load_config("mlp-digits", ["train.keep_best=true", "train.profile_steps=2"])
    train = cfg.train
    assert train.keep_best and train.profile_steps == 2 and train.nan_guard
    copy = dataclasses.replace(train, seed=3)
    copy.max_bad_steps = 9
    assert copy.keep_best and copy.seed == 3 and train.max_bad_steps == 3  # a copy of each part
    assert TrainConfig(sample_tokens=0, keep_last=1).sample_tokens == 0
    keys = list(to_dict(cfg)["train"])
    assert keys.index("peak_flops") + 1 == keys.index("checkpoint_every")  # the order of before
    assert keys[-4:] == ["profile", "profile_wait", "profile_warmup", "profile_steps"]
    with pytest.raises(ConfigError, match="unknown config key 'train.checkpointing'"):
        load_config("mlp-digits", ["train.checkpointing=1"])
    with pytest.raises(ConfigError, match="unknown config key 'train.bogus'"):
        TrainConfig(bogus=1)
    with pytest.raises(ConfigError, match="train.keep_last must be at least 1"):
        load_config("mlp-digits", ["train.keep_last=0"])


def test_a_run_written_before_sections_still_loads_and_a_user_file_is_still_checked(
    tmp_path,
) -> None:
    # A run's config.toml from before each data set and optimizer owned its keys: every key
    # of every component, most never read. Beside its data.json it is a run record.
    old = '[train]\nmax_steps = 5\n[data]\nname = "digits"\nnum_samples = 1000\npath = ""\n'
    old += '[optim]\nname = "adamw"\nmomentum = 0.9\n'
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(old)
    (run / "data.json").write_text("{}")
    cfg = load_config(str(run / "config.toml"))
    assert (cfg.data.name, cfg.optim.name, cfg.train.max_steps) == ("digits", "adamw", 5)
    (tmp_path / "mine.toml").write_text(old)  # the same keys in a user's own file: refused
    with pytest.raises(ConfigError, match="data.num_samples applies to"):
        load_config(str(tmp_path / "mine.toml"))
