"""Training inside a compression: fine-tuning a pruned model, training a distilled student.

Both run hone's own `Trainer` into the new run directory, handed the parts the method built
(the pruned model, the teacher and its loss, observers), so the new run is a real run:
config, metrics.jsonl, summary, weights, data info. Not its checkpoints: a compressed run is
used, not resumed.
"""

from __future__ import annotations

import copy
import shutil
from typing import Any

from hone.config import Config
from hone.engine.runtime import seed_everything
from hone.engine.trainer import Trainer
from hone.run_files import RunFiles


def fine_tune_config(cfg: Config, steps: int) -> Config:
    """A copy of a run's config that trains exactly `steps` more steps (no epoch or time
    bound), with the run's own optimizer, schedule, batch size and data."""
    tuned = copy.deepcopy(cfg)
    tuned.train.max_steps, tuned.train.max_epochs, tuned.train.max_seconds = steps, 0, 0.0
    return tuned


def train_into(cfg: Config, out: RunFiles, **parts: Any) -> Trainer:
    """Train with `cfg` and the `parts` handed to the Trainer (model, data, loss, teacher,
    observers) into the run directory `out`; returns the finished trainer. The global RNGs
    (dropout) are seeded from the config, also when a model is handed in."""
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    # A pruned model is the config's architecture, changed: the run records the change as
    # converters, not as a model of its own.
    trainer = Trainer(config=cfg, run_dir=out.root, keep_model_config=True, **parts)
    trainer.fit()
    shutil.rmtree(out.checkpoints, ignore_errors=True)
    return trainer


def last_validation(trainer: Trainer) -> dict[str, float]:
    """The run's last validation metrics, {"val_loss": ..., "val_<metric>": ...}."""
    return {k: v for k, v in trainer.state.last_val.items() if not k.startswith("_")}
