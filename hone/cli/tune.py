"""`hone tune CONFIG ...` and `hone tune show STUDY`: parse, call hone.tune, print."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from hone.cli.output import add_json_flag, print_json
from hone.errors import ConfigError

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

# Flags that are shortcuts for a [tune] config key (so the config is the one place they live).
_CONFIG_FLAGS = {
    "sampler": "tune.sampler",
    "pruner": "tune.pruner",
    "metric": "tune.metric",
    "direction": "tune.direction",
}


def add_parser(sub: Any) -> None:
    """Add `tune` to the `hone` subcommands (`sub` is argparse's subparsers object)."""
    from hone.cli import _Parser

    p = sub.add_parser(
        "tune",
        help="tune hyperparameters with Optuna (or `hone tune show STUDY`)",
        description=(
            "Tune the [tune.space] of a config: `hone tune CONFIG --trials N`. Every built-in "
            "recipe has a default space (`hone config show RECIPE` prints it); a file's own "
            "[tune.space] replaces its base's whole. "
            "`hone tune show STUDY` prints the leaderboard of an existing study. "
            "Config overrides (--section.key=value) apply to every trial."
        ),
    )
    assert isinstance(p, _Parser)
    p.add_argument("config", help="recipe name or TOML file with a [tune.space] table, or 'show'")
    p.add_argument("study_name", nargs="?", help="with 'show': the study to print")
    p.add_argument("--trials", type=int, default=20, help="finished trials the study should have")
    p.add_argument(
        "--timeout", type=float, default=0.0, help="start no trial after SECONDS (0: no limit)"
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    p.add_argument(
        "--storage",
        default="",
        help="database URL, e.g. postgresql://user@host/db (default: SQLite in --dir)",
    )
    p.add_argument("--study", default="", help="study name (default: the recipe's name)")
    p.add_argument("--sampler", help="tpe, random, grid, cmaes, gp, qmc or nsga2 (tune.sampler)")
    p.add_argument(
        "--pruner", help="auto, none, median, successive-halving or hyperband (tune.pruner)"
    )
    p.add_argument(
        "--metric", help="objective metric(s), comma-separated (tune.metric; default val_loss)"
    )
    p.add_argument("--direction", help="min or max per metric, comma-separated (tune.direction)")
    p.add_argument("--dir", default="", help="tuning directory (default tune/<study>)")
    p.add_argument("--cv", type=int, default=0, help="objective: mean over K folds")
    add_json_flag(p, "the result (with 'show': the study's trials)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.config == "show":
        if not args.study_name:
            raise ConfigError("hone tune show needs a study name: hone tune show STUDY")
        return show(args)
    if args.study_name:
        raise ConfigError(
            f"hone tune takes one config, got also {args.study_name!r}; "
            "to print a study use `hone tune show STUDY`"
        )
    from hone.tune import TuneOptions, tune

    overrides = list(args.overrides)
    for flag, key in _CONFIG_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    result = tune(
        TuneOptions(
            config=args.config,
            overrides=overrides,
            trials=args.trials,
            timeout=args.timeout,
            workers=args.workers,
            storage=args.storage,
            study=args.study,
            directory=args.dir,
            cv=args.cv,
        )
    )
    if args.json:
        print_json(
            {
                "study": result.study,
                "storage": result.storage,
                "directory": result.directory,
                "metrics": result.metrics,
                "counts": result.counts,
                "best": [_trial(trial) for trial in result.best],
                "best_config": result.best_config,
                "report_skipped": result.report_skipped,
            }
        )
    else:
        _print_result(result)
    return 0


def _trial(trial: FrozenTrial) -> dict[str, Any]:
    """One trial for --json: `values` in the order of the study's metrics."""
    from hone.tune.leaderboard import duration_seconds

    reported = trial.intermediate_values
    last = max(reported, default=None)
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "values": trial.values,
        "params": trial.params,
        "seconds": duration_seconds(trial),
        "last_report": None if last is None else {"step": last, "value": reported[last]},
        "error": trial.user_attrs.get("error"),
    }


def _print_result(result: Any) -> None:
    counts = ", ".join(f"{n} {state}" for state, n in result.counts.items() if n)
    print(f"study {result.study}: {counts or 'no trials'} ({result.storage})")
    if not result.best:
        print("no trial completed: nothing to report")
        return
    label = "best trial" if len(result.best) == 1 else "Pareto front"
    for trial in result.best:
        values = ", ".join(
            f"{m} {_fmt(v)}" for m, v in zip(result.metrics, trial.values, strict=True)
        )
        params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        print(f"{label}: trial {trial.number}: {values}  {params}")
    print(f"best config: {result.best_config}  (hone train {result.best_config})")
    for plot, reason in result.report_skipped.items():
        print(f"report: left out {plot}: {reason}")
    report = result.directory / "report"
    print(
        f"trials: {result.directory / 'trials'}"
        + (f"  report: {report}" if report.exists() else "")
    )


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hone.tune import show as load
    from hone.tune.leaderboard import table

    study, trials = load(args.study_name, args.storage, args.dir)
    if args.json:
        print_json(
            {
                "study": study.study_name,
                "metrics": study.user_attrs.get("metrics"),
                "directions": [d.name.lower() for d in study.directions],
                "trials": [_trial(trial) for trial in trials],  # best first
            }
        )
        return 0
    Console(soft_wrap=True).print(table(study, trials))
    return 0
