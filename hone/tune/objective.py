"""The objective: one trial is one ordinary training run in `<tuning dir>/trials/trial-<n>/`.

The trial's metric is reported to Optuna at every evaluation by an observer of the trainer
(`PruningObserver`), and a trial the pruner stops ends at that evaluation. Its run directory is complete either
way: config.toml, metrics.jsonl and a summary.json tagged with the trial number and state.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from hone.config import Config
from hone.engine.observers import Observer
from hone.errors import ConfigError
from hone.run_files import RunFiles
from hone.tune.configs import TrialConfigs
from hone.tune.space import SearchSpace

# summary.json keys that are a run's best validation values, by the metric they hold.
_CV_KEYS = {"val_loss": "best_val_loss_mean"}


def trial_dir(directory: Path, number: int) -> Path:
    return directory / "trials" / f"trial-{number}"


def metric_value(name: str, best_val: dict[str, float], summary: dict[str, Any]) -> float:
    """A trial's value of `name`: the best over its evaluations for val_*, else summary.json's."""
    if name in best_val:
        return float(best_val[name])
    value = summary.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    known = sorted(
        set(best_val) | {k for k, v in summary.items() if isinstance(v, int | float)} - {"seed"}
    )
    raise ConfigError(
        f"tune.metric {name!r} is not measured by this run; set --metric to one of: {', '.join(known)}"
    )


def tag_summary(run_dir: Path, extra: dict[str, Any]) -> None:
    """Add the trial's number, state and parameters to its summary.json."""
    path = RunFiles(run_dir).summary
    summary = json.loads(path.read_text()) if path.exists() else {}
    summary.update(extra)
    tmp = path.with_name(".summary.json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    tmp.replace(path)


class Objective:
    """Callable by Optuna: build the trial's config, train it, return its metric(s)."""

    def __init__(
        self,
        configs: TrialConfigs,
        space: SearchSpace,
        directory: Path,
        metrics: Sequence[str],
        report: bool,
        cv: int = 0,
    ) -> None:
        self.configs, self.space, self.directory = configs, space, directory
        # One metric is reported at every evaluation (pruning and the intermediate-values
        # plot use it); several metrics cannot be, Optuna prunes on one.
        self.metrics, self.report, self.cv = list(metrics), report, cv
        self.config_error: ConfigError | None = None  # stops the study: every trial would fail

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except ConfigError as e:
            self.config_error = e
            trial.study.stop()
            raise
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
            raise

    def _run(self, trial: optuna.Trial) -> float | list[float]:
        params = self.space.sample(trial, self.configs.value)
        cfg = self.configs.build(params)
        run_dir = trial_dir(self.directory, trial.number)
        # Trial numbers are unique in a study: a folder already there is left from a study of
        # the same name whose storage was deleted.
        shutil.rmtree(run_dir, ignore_errors=True)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        tags = {"trial": trial.number, "study": trial.study.study_name, "params": params}
        if self.cv:
            return self._cross_validate(trial, cfg, run_dir, tags)
        from hone.engine import Trainer

        observers = [PruningObserver(trial, self.metrics[0])] if self.report else []
        trainer = Trainer(config=cfg, run_dir=run_dir, observers=observers)
        try:
            summary = trainer.fit()
        except optuna.TrialPruned:
            # The Trainer closed its files; the summary says how far the trial went.
            summary = trainer.summary()
            summary["stop_reason"] = "pruned"
            trainer.log.write_json(trainer.files.summary.name, summary)
            tag_summary(run_dir, {**tags, "state": "PRUNED"})
            trial.set_user_attr("steps", trainer.state.step)
            raise
        trial.set_user_attr("steps", trainer.state.step)
        values = [metric_value(m, trainer.state.best_val, summary) for m in self.metrics]
        if any(math.isnan(v) for v in values):
            # Optuna cannot rank NaN; recorded as a failure that says why.
            raise FloatingPointError(f"{self.metrics} = {values}: the run diverged")
        tag_summary(
            run_dir,
            {**tags, "state": "COMPLETE", "values": dict(zip(self.metrics, values, strict=True))},
        )
        return values[0] if len(values) == 1 else values

    def _cross_validate(
        self, trial: optuna.Trial, cfg: Config, run_dir: Path, tags: dict[str, Any]
    ) -> float | list[float]:
        from hone.engine.cv import cross_validate

        result = cross_validate(cfg, run_dir, self.cv)
        trial.set_user_attr("steps", _cv_steps(run_dir, self.cv))
        keys = {**_CV_KEYS, f"val_{result['metric']}": "best_val_metric_mean"}
        values = []
        for metric in self.metrics:
            if metric not in keys:
                raise ConfigError(
                    f"with --cv the objective is a mean over folds of val_loss or "
                    f"val_{result['metric']}, got {metric!r}; set --metric to one of them"
                )
            values.append(float(result[keys[metric]]))
        RunFiles(run_dir).summary.write_text(json.dumps(result, indent=2) + "\n")
        tag_summary(
            run_dir,
            {**tags, "state": "COMPLETE", "values": dict(zip(self.metrics, values, strict=True))},
        )
        return values[0] if len(values) == 1 else values


def _cv_steps(run_dir: Path, folds: int) -> int:
    """Training steps over all folds, from each fold's summary.json."""
    total = 0
    for fold in range(folds):
        path = RunFiles(run_dir).fold(fold).summary
        if path.exists():
            total += int(json.loads(path.read_text()).get("steps", 0))
    return total


class PruningObserver(Observer):
    """Reports the trial's objective as it stands, the best value of the metric so far, at
    every evaluation, and ends the trial when the pruner says so (raising TrialPruned aborts
    the run: a pruned trial writes no final artifacts).

    The objective is the best over evaluations, so this is what the pruner should rank; it is
    also far less noisy than single evaluations (a small validation set makes the loss jump),
    which otherwise lets a pruner stop the eventual best trial on one bad evaluation
    (bench/tune_pruning.py measures this).
    """

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric
        # The study's direction, which the user may set against the metric's own.
        minimize = trial.study.direction == optuna.study.StudyDirection.MINIMIZE
        self.better = min if minimize else max
        self.best = math.nan

    def on_evaluation(self, trainer: Any, step: int, metrics: dict[str, float]) -> None:
        if self.metric not in metrics:
            return  # a summary metric such as num_parameters has no intermediate values
        value = metrics[self.metric]
        if math.isfinite(value):
            self.best = value if math.isnan(self.best) else self.better(self.best, value)
        self.trial.report(self.best, step)  # NaN until a finite value: pruners stop such a trial
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} with {self.metric} {self.best:.6g}")
