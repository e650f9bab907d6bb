"""What the report tests share, each made once per session in this process: a classifier,
a second one to overlay (a learning rate too high, so the doctor has findings), a char GPT
with a sample, a run paused mid-training (live), a study of four linreg trials, and one
headless Chromium for every page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compress.conftest import QUIET, TINY_GPT, one_thread_in_tmp
from tests.report.browser import Browser, find_browser
from tests.tune.conftest import LR_SPACE, linreg_config

# mlp-digits, a few epochs: validation at every epoch, statistics every 5 steps.
DIGITS = [
    "train.max_epochs=3",
    "train.eval_every=0",
    "log.every=5",
    "log.stats_every=5",
    "model.width=32",
    *QUIET,
]


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from hone.config import load_config
    from hone.engine import Trainer
    from hone.tune import TuneOptions, tune

    root = tmp_path_factory.mktemp("report-runs")
    out = {name: root / name for name in ("digits", "hot", "gpt")}
    with one_thread_in_tmp(tmp_path_factory):
        Trainer(config=load_config("mlp-digits", DIGITS), run_dir=out["digits"]).fit()
        Trainer(
            config=load_config("mlp-digits", [*DIGITS, "optim.lr=0.5"]), run_dir=out["hot"]
        ).fit()
        gpt = [*TINY_GPT, "train.max_steps=30", "train.eval_every=10", "log.every=5"]
        gpt += ["train.sample_tokens=60", "log.stats_every=10"]
        Trainer(config=load_config("gpt-shakespeare-char", gpt), run_dir=out["gpt"]).fit()
        space = {**LR_SPACE, "optim.weight_decay": {"type": "float", "low": 1e-4, "high": 0.1}}
        config = linreg_config(root / "tune.toml", space, pruner="none")
        tune(TuneOptions(str(config), trials=4, directory=str(root / "study")))
    out["study"] = root / "study"
    return out


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A run trained in rounds, paused at step 20 of 60 while the tests look at it: its
    trainer is alive, so its status says running."""
    from hone.config import load_config
    from hone.engine import Trainer

    path = tmp_path_factory.mktemp("report-live") / "live"
    with one_thread_in_tmp(tmp_path_factory):
        trainer = Trainer(
            config=load_config("mlp-digits", [*DIGITS, "train.max_steps=60"]), run_dir=path
        )
        trainer.run(until=20)
    yield path
    trainer.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    reason = find_browser()
    if reason:
        pytest.skip(f"no headless browser to check the report pages in: {reason}")
    chromium = Browser()
    try:
        yield chromium
    finally:
        chromium.close()
