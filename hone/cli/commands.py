"""One function per `hone` command: parse arguments into library calls and print results."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hone.cli.output import print_json
from hone.config import field_help, load_config, recipe_names, to_toml
from hone.config.loader import read_source
from hone.errors import ConfigError, TrainingAborted

if TYPE_CHECKING:
    from hone.checkpoint import TrainingInterrupted

DEFAULT_RECIPE = "gpt-shakespeare-char"


def train(args: argparse.Namespace) -> int:
    from hone.checkpoint import TrainingInterrupted, plan_resume
    from hone.engine import Trainer
    from hone.engine.cv import cross_validate
    from hone.run_files import default_run_dir
    from hone.track.progress import print_summary

    if args.profile:
        args.overrides.append("train.profile=true")
    resume: bool | str = False
    if args.resume:  # the run's own config (overrides only where exactness allows)
        cfg, folder, resume = plan_resume(
            args.resume, args.run_dir, args.config, args.overrides, DEFAULT_RECIPE
        )
        args.run_dir = str(folder)
    else:
        cfg = load_config(args.config or DEFAULT_RECIPE, args.overrides)
    if args.nproc > 1 or args.nnodes > 1 or args.max_restarts:
        from hone.distributed.launch import launch

        if args.json:  # rank 0 prints the summary, and the workers are not handed --json
            raise ConfigError(
                "--json goes with a single-process run; with --nproc/--nnodes read "
                "RUN/summary.json when the run ends (set --run-dir=runs/NAME to know RUN)"
            )
        return launch(args, cfg)
    from hone.distributed.launch import external_run_dir

    run_dir = (
        Path(args.run_dir)
        if args.run_dir
        else external_run_dir(cfg.recipe) or default_run_dir(cfg.recipe)
    )
    if args.cv:
        try:
            result = cross_validate(cfg, run_dir, args.cv, resume=bool(resume))
        except TrainingInterrupted as stop:
            print(
                f"hone: {stop}; continue with `hone train --cv {args.cv} --resume {run_dir}`",
                file=sys.stderr,
            )
            return _stopped(args, stop, run_dir)
        if args.json:
            print_json({**result, "run_dir": run_dir})
            return 0
        print(
            f"{args.cv}-fold cross-validation: val {result['metric']} "
            f"{result['best_val_metric_mean']:.4f} ± {result['best_val_metric_std']:.4f}, "
            f"val loss {result['best_val_loss_mean']:.4f} ± {result['best_val_loss_std']:.4f} ({run_dir})"
        )
        return 0
    trainer = Trainer(config=cfg, run_dir=run_dir, resume=resume)
    try:
        summary = trainer.fit()
    except TrainingAborted as abort:  # the run diverged: and what doctor makes of it
        print(f"hone: error: {abort}", file=sys.stderr)
        _doctor_hint(run_dir)
        return abort.exit_code
    except TrainingInterrupted as stop:
        print(f"hone: {stop}; continue with `hone train --resume {run_dir}`", file=sys.stderr)
        return _stopped(args, stop, run_dir)
    if not trainer.dist.is_main:  # one process reports for the whole group
        return 0
    sample = summary.pop("sample", None)
    print_summary(
        {k: v for k, v in summary.items() if v is not None}, title=f"hone train {cfg.recipe}"
    )
    if args.json:
        print_json({**summary, "sample": sample, "run_dir": run_dir})
    else:
        if sample is not None:
            print(f"--- sample ---\n{sample}\n--------------")
        print(f"run directory: {run_dir}")
    _doctor_hint(run_dir)
    return 0


def _stopped(args: argparse.Namespace, stop: TrainingInterrupted, run_dir: Path) -> int:
    """The exit code of a run a signal stopped; with --json also a document that says so
    (SIGTERM's code is 0, so a script would otherwise find no summary and no error)."""
    if args.json:
        name = signal.Signals(stop.signum).name
        stopped = {"signal": name, "step": stop.step, "checkpoint": stop.checkpoint}
        print_json({"stopped": stopped, "run_dir": run_dir})
    return stop.exit_code


def _doctor_hint(run_dir: Path) -> None:
    """One line when `hone doctor` would report an error for the run just trained."""
    from hone.doctor import diagnose

    report = diagnose(run_dir)
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    if errors:
        names = ", ".join(f["id"] for f in errors)
        print(
            f"hone: doctor: {errors[0]['summary']} ({names}); `hone doctor {run_dir}` for details",
            file=sys.stderr,
        )


def recipes(args: argparse.Namespace) -> int:
    described = [(name, read_source(name)[0].get("description", "")) for name in recipe_names()]
    if args.json:
        print_json([{"name": name, "description": text} for name, text in described])
        return 0
    width = max(len(name) for name, _ in described)
    for name, text in described:
        print(f"{name:<{width}}  {text}")
    return 0


def config_show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config or DEFAULT_RECIPE, args.overrides)
    sys.stdout.write(to_toml(cfg))
    return 0


def config_keys(args: argparse.Namespace) -> int:
    keys = field_help()
    if args.json:
        print_json([{"key": key, "default": default, "help": text} for key, default, text in keys])
        return 0
    for key, default, help_text in keys:
        print(f"{key} = {json.dumps(default)}  # {help_text}")
    return 0


def predict(args: argparse.Namespace) -> int:
    from hone.engine.predict import predict_csv

    rows = predict_csv(args.run_dir, args.input, args.output, args.device, args.backend)
    print(f"wrote {rows} predictions to {args.output}")
    return 0


def sample(args: argparse.Namespace) -> int:
    from hone.engine.inference import LoadedRun

    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ConfigError(f"--temperature must be at least 0, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1] (1 keeps every token), got {args.top_p}")
    run = LoadedRun.load(args.run_dir, args.device, backend=args.backend)
    if not run.task.generates_text:
        raise ConfigError(
            f"{args.run_dir} is not a language model; use `hone predict` or `hone eval` for it"
        )
    text = run.sample(
        args.prompt,
        args.max_new_tokens,
        args.temperature,
        args.top_k or None,
        args.seed,
        top_p=args.top_p,
    )
    print(args.prompt + text)
    return 0


def add_tune_parser(sub: Any) -> None:
    """`hone tune` and `hone tune show` (hone/cli/tune.py)."""
    from hone.cli.tune import add_parser

    add_parser(sub)
