"""k-fold cross-validation: one training run per fold, reported as mean +- std."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from hone.config import Config
from hone.data import TensorData, build_data
from hone.data.split import kfold
from hone.errors import ConfigError
from hone.run_files import RunFiles
from hone.track.run import RunLog


def cross_validate(
    cfg: Config, run_dir: Path, k: int, is_main: bool = True, resume: bool = False
) -> dict[str, Any]:
    """Train on each of `k` folds of train+val (in run_dir/fold-<i>); summarize the folds.

    With `resume`, finished folds are read back from their summary.json and the fold that was
    interrupted continues from its newest checkpoint.
    """
    if k < 2:
        raise ConfigError(f"--cv must be at least 2 folds, got {k}")
    from hone.engine.trainer import Trainer

    data = build_data(cfg)
    if not isinstance(data, TensorData):
        raise ConfigError(
            "--cv needs a supervised data set; language-model corpora are split contiguously"
        )
    folds = []
    for fold in range(k):
        fold_files = RunFiles(run_dir).fold(fold)
        fold_dir = fold_files.root
        if resume and fold_files.summary.is_file():
            folds.append(json.loads(fold_files.summary.read_text()))
            continue
        fold_data = kfold(data, k, fold, cfg.data.split_seed)
        trainer = Trainer(
            config=cfg, run_dir=fold_dir, data=fold_data, resume="auto" if resume else False
        )
        folds.append(trainer.fit())
    metric = folds[0]["metric"]
    result: dict[str, Any] = {"recipe": cfg.recipe, "folds": k, "metric": metric}
    for key in ("best_val_loss", "best_val_metric"):
        values = [f[key] for f in folds]
        result[key] = values
        result[f"{key}_mean"] = statistics.fmean(values)
        result[f"{key}_std"] = statistics.stdev(values)
    log = RunLog(run_dir, cfg, is_main, tensorboard=False)
    log.write_json(RunFiles(run_dir).cv.name, result)
    log.close()
    return result
