"""What the CLI tests share, each made once per session and in this process (a `hone`
subprocess pays seconds to import torch): a tiny linreg run, a tiny char GPT, and a study
of two linreg trials."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compress.conftest import QUIET, TINY_GPT, one_thread_in_tmp
from tests.tune.conftest import LR_SPACE, linreg_config

# A few steps of linreg: a run for every command to read, made in well under a second.
TINY_LINREG = ["train.max_steps=5", *QUIET]


@pytest.fixture(scope="session")
def linreg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hone.config import load_config
    from hone.engine import Trainer

    run = tmp_path_factory.mktemp("cli") / "linreg"
    with one_thread_in_tmp(tmp_path_factory):
        Trainer(config=load_config("linreg", TINY_LINREG), run_dir=run).fit()
    return run


@pytest.fixture(scope="session")
def gpt_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-block char GPT after 3 steps: enough for `hone sample`."""
    from hone.config import load_config
    from hone.engine import Trainer

    run = tmp_path_factory.mktemp("cli") / "gpt"
    with one_thread_in_tmp(tmp_path_factory):
        Trainer(
            config=load_config("gpt-shakespeare-char", [*TINY_GPT, "train.max_steps=3"]),
            run_dir=run,
        ).fit()
    return run


@pytest.fixture(scope="session")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tuning directory of a finished study of two linreg trials, named 'linreg'; its
    config is the directory's sibling tune.toml."""
    from hone.tune import TuneOptions, tune

    root = tmp_path_factory.mktemp("cli-tune")
    config = linreg_config(root / "tune.toml", LR_SPACE)
    with one_thread_in_tmp(tmp_path_factory):
        tune(TuneOptions(str(config), trials=2, directory=str(root / "study")))
    return root / "study"
