"""The default main job (`make train`) is bounded by steps, not by seconds: its result does not
depend on how fast or busy the machine is, and its progress bar knows the steps to go."""

from __future__ import annotations

import re
from pathlib import Path

from hone.config import load_config
from hone.engine.bounds import planned_steps

ROOT = Path(__file__).resolve().parents[1]


def main_job() -> str:
    """The recipe `make train` trains when no RECIPE is given."""
    match = re.search(r"hone train \$\(or \$\(RECIPE\),([\w-]+)\)", (ROOT / "Makefile").read_text())
    assert match, "the Makefile's train target no longer names its default recipe this way"
    return match.group(1)


def test_the_main_job_is_bounded_by_steps_only() -> None:
    assert main_job() == "gpt-shakespeare-char"
    train = load_config(main_job()).train
    assert train.max_seconds == 0  # no time bound: a slow machine trains as many steps
    assert train.max_steps == 1000
    # the progress bar's total: it shows the time left from the step rate
    assert planned_steps(load_config(main_job()), steps_per_epoch=10**6) == 1000
