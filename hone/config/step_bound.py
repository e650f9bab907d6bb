"""`HONE_MAX_STEPS`: an upper bound on the steps and rounds of every run, set from outside.

For checks that run commands exactly as a user types them (tests/test_readme.py runs every
command of the README and docs/): `hone train gpt-shakespeare-char` trains 1000 steps, and
under `HONE_MAX_STEPS=5` it trains 5, everything else as typed. The bound applies to
`train.max_steps`, `federated.rounds`, a language model's validation batches
(`train.eval_batches`, whose 0 means the whole split: a minute for the speedrun recipe) and
the trials of `hone tune`. It is applied as the config is loaded, so a run's config.toml
records what the run was given.
"""

from __future__ import annotations

import os

from hone.config.schema import Config
from hone.errors import ConfigError

MAX_STEPS_ENV = "HONE_MAX_STEPS"


def step_bound() -> int | None:
    """$HONE_MAX_STEPS as a number, None when unset."""
    text = os.environ.get(MAX_STEPS_ENV, "")
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(
            f"{MAX_STEPS_ENV} must be a positive integer, got {text!r}; unset it or set "
            f"{MAX_STEPS_ENV}=5"
        )
    return int(text)


def bound_count(count: int) -> int:
    """A count of steps, rounds or trials (0: unbounded) lowered to $HONE_MAX_STEPS."""
    bound = step_bound()
    if bound is None:
        return count
    return min(count, bound) if count else bound


def bound_steps(cfg: Config) -> None:
    """Lower `train.max_steps`, `train.eval_batches` and `federated.rounds` to the bound."""
    if step_bound() is None:
        return
    t = cfg.train
    t.max_steps = bound_count(t.max_steps)
    t.eval_batches = bound_count(t.eval_batches)
    cfg.federated.rounds = bound_count(cfg.federated.rounds)
