"""`hone lr-find CONFIG ...`: parse, run hone.doctor.lr_find, print the suggestion and the
`hone train` line that uses it."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hone.cli.output import add_json_flag, print_json
from hone.config import load_config


def add_parser(sub: Any) -> None:
    """Add `lr-find` to the `hone` subcommands (`sub` is argparse's subparsers object)."""
    p = sub.add_parser(
        "lr-find",
        help="learning-rate range test: sweep the lr, suggest one",
        description=(
            "Train a fresh model while the lr grows exponentially from --start-lr to --end-lr, "
            "stop when the loss diverges, and suggest an lr. Config overrides: "
            "--section.key=value"
        ),
    )
    p.add_argument("config", help="recipe name or TOML file")
    p.add_argument("--output", help="folder for lr_find.json and lr_find.png "
                   "(default runs/lr-find-<recipe>-<UTC time>)")  # fmt: skip
    p.add_argument(
        "--start-lr", type=float, default=1e-7, help="first lr of the sweep (default 1e-7)"
    )
    p.add_argument("--end-lr", type=float, default=10.0, help="last lr of the sweep (default 10)")
    p.add_argument(
        "--num-steps", type=int, default=200, help="steps of the sweep, at most (default 200)"
    )
    p.add_argument(
        "--smoothing",
        type=float,
        help="beta of the loss's moving average (default 1 - 20/num-steps: 0.9 at 200 steps)",
    )
    p.add_argument(
        "--stop-factor",
        type=float,
        default=4.0,
        help="stop when the smoothed loss exceeds this times its best (default 4)",
    )
    add_json_flag(p, "the result (lr_find.json's fields, the files and the train command)")
    p.set_defaults(run=run)


def train_command(config: str, overrides: Sequence[str], lr: Mapping[str, float]) -> str:
    """The `hone train` line of `config` and the user's overrides with the suggested lr(s)."""
    kept = [f"--{item}" for item in overrides if item.partition("=")[0] not in lr]
    suggested = [f"--{key}={value:g}" for key, value in lr.items()]
    return shlex.join(["hone", "train", config, *kept, *suggested])


def run(args: argparse.Namespace) -> int:
    from hone.doctor.lr_find import lr_find
    from hone.run_files import default_run_dir

    cfg = load_config(args.config, args.overrides)
    output = Path(args.output) if args.output else default_run_dir(f"lr-find-{cfg.recipe}")
    result = lr_find(
        cfg, output, args.start_lr, args.end_lr, args.num_steps, args.smoothing, args.stop_factor
    )
    command = train_command(args.config, args.overrides, result.overrides)
    if args.json:
        files = {"json_path": result.json_path, "plot_path": result.plot_path}
        print_json({**dataclasses.asdict(result), **files, "train_command": command})
        return 0
    print(f"suggested lr: {result.suggestion:.3g} ({result.rule}): {result.reason}")
    print(f"the sweep took {len(result.lrs)} steps and stopped: {result.stop_reason}")
    print(f"wrote {result.json_path} and {result.plot_path}")
    print(command)
    return 0
