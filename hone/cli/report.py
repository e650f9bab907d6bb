"""`hone report RUN [RUN ...] [--output FILE]`: one HTML page of plots; parse, write, say where."""

from __future__ import annotations

import argparse
from typing import Any

from hone.cli.output import add_json_flag, print_json


def add_parser(sub: Any) -> None:
    """Add `report` to the `hone` subcommands (`sub` is argparse's subparsers object)."""
    p = sub.add_parser(
        "report",
        help="write one self-contained HTML page of plots for runs or a tuning study",
        description=(
            "Plots of a run (or several overlaid): loss against steps and time, the task "
            "metric, learning rate, gradient statistics, throughput and MFU; the doctor's "
            "findings, test metrics, the sample of a language model and the config (for "
            "several runs, what differs). For a tuning directory: Optuna's history, "
            "importances, parallel coordinates and slices, and the leaderboard. The page "
            "opens with no network; a live run is reported as it stands."
        ),
    )
    p.add_argument("paths", nargs="+", help="run directories, or one tuning directory")
    p.add_argument(
        "--output",
        "-o",
        help="HTML file to write (default: report.html in the run or tuning directory; "
        "for several runs, in the current folder)",
    )
    p.add_argument("--study", default="", help="the study to report when the database has several")
    add_json_flag(p, "where the page was written")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from hone.report import write_report

    path = write_report(args.paths, args.output, args.study)
    if args.json:
        print_json({"report": path.resolve()})
    else:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")
    return 0
