"""`hone runs [DIR ...]` and `hone runs compare A B [C ...]`: parse, call hone.runs, print."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

from hone.cli.output import add_json_flag, print_json
from hone.errors import ConfigError

DEFAULT_FOLDER = "runs"
# ANSI colours of the states on a terminal (not when NO_COLOR is set or output is piped).
STATE_COLORS = {
    "running": "1;36",
    "finished": "32",
    "stopped": "33",
    "failed": "1;31",
    "killed": "31",
    "pruned": "2",
    "incomplete": "2",
}
COLUMNS = ("name", "recipe", "status", "steps", "best val", "wall", "throughput", "started")
RIGHT = {"steps", "wall", "throughput"}


def add_parser(sub: Any) -> None:
    """Add `runs` to the `hone` subcommands (`sub` is argparse's subparsers object)."""
    p = sub.add_parser(
        "runs",
        help="list runs with their status and results (or `hone runs compare A B`)",
        description=(
            "A table of the runs under each DIR (default runs/): status (running, finished, "
            "stopped, failed with its exit code, killed, pruned), steps, best validation "
            "metric, wall time, throughput, start. `hone runs compare A B [C ...]` shows the "
            "config keys that differ and the final metrics side by side."
        ),
    )
    p.add_argument("paths", nargs="*", help="folders of runs, or 'compare' and run directories")
    p.add_argument(
        "--sort",
        default="started",
        help="column, summary key or config key to sort by: name, recipe, status, steps, "
        "best (best first), best_val_loss, wall_seconds, steps_per_second, started (default)",
    )
    p.add_argument("--reverse", action="store_true", help="reverse the order")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COND",
        help="keep runs where KEY OP VALUE holds (OP: = != < <= > >= ~); repeat to AND, e.g. "
        '--where recipe=mlp-digits --where "best_val_loss<1.9" --where optim.lr<=0.01',
    )
    add_json_flag(p, "the runs (with compare: the differences and metrics)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.paths[:1] == ["compare"]:
        return compare(args, args.paths[1:])
    from hone.runs import list_runs, sort_runs, where

    folders = args.paths or [DEFAULT_FOLDER]
    for folder in folders:
        if not Path(folder).is_dir():
            raise ConfigError(
                f"{folder} is not a folder of runs; pass one, e.g. hone runs runs/ tune/NAME/trials"
            )
    records = sort_runs(where(list_runs(folders), args.where), args.sort, args.reverse)
    if args.json:
        print_json([r.to_json() for r in records])
        return 0
    if not records:
        print(f"no runs under {', '.join(folders)}" + (" match" if args.where else ""))
        return 0
    counts: dict[str, int] = {}
    for record in records:
        counts[record.status.state] = counts.get(record.status.state, 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in counts.items())
    runs = "1 run" if len(records) == 1 else f"{len(records)} runs"
    print(f"{runs} in {', '.join(folders)}: {states}")
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    print(table(records, color))
    return 0


def _console() -> Any:
    """rich's console; piped or captured, wide enough that no cell is cut to 80 columns."""
    from rich.console import Console

    console = Console(soft_wrap=True, highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=1000)


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    minutes, seconds = divmod(int(round(value)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{value:.1f}s"


def _rate(record: Any) -> str:
    if record.tokens_per_second:
        return f"{record.tokens_per_second:,.0f} tok/s"
    if record.steps_per_second:
        return f"{record.steps_per_second:,.1f} steps/s"
    return ""


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def rows(records: list[Any]) -> list[list[str]]:
    """The cells of the table, as text."""
    out = []
    for r in records:
        steps = _fmt(r.steps)
        if r.status.state == "running" and r.total_steps:
            steps = f"{steps}/{r.total_steps}"
        best = f"{r.metric} {_fmt(r.best)}" if r.best is not None else ""
        if r.best is None and r.best_val_loss is not None:
            best = f"loss {_fmt(r.best_val_loss)}"
        started = r.started.strftime("%Y-%m-%d %H:%M") if r.started else ""
        cells = [r.name, r.recipe, r.status.label, steps, best, _seconds(r.wall_seconds)]
        out.append([*cells, _rate(r), started])
    return out


def table(records: list[Any], color: bool = False) -> str:
    """The runs as an aligned text table (rich's Table took seconds for a thousand rows)."""
    cells = rows(records)
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(COLUMNS)]

    def line(row: list[str], styles: list[str]) -> str:
        out = []
        for i, (text, width) in enumerate(zip(row, widths, strict=True)):
            padded = text.rjust(width) if COLUMNS[i] in RIGHT else text.ljust(width)
            out.append(f"\x1b[{styles[i]}m{padded}\x1b[0m" if color and styles[i] else padded)
        return "  ".join(out).rstrip()

    lines = [line(list(COLUMNS), ["1"] * len(COLUMNS))]
    for record, row in zip(records, cells, strict=True):
        styles = [""] * len(COLUMNS)
        styles[2] = STATE_COLORS.get(record.status.state, "")
        lines.append(line(row, styles))
    return "\n".join(lines)


def compare(args: argparse.Namespace, paths: list[str]) -> int:
    from rich.table import Table

    from hone.runs import compare_runs

    result = compare_runs(paths)
    if args.json:
        print_json(result.to_json())
        return 0
    console = _console()
    names = [r.name for r in result.runs]
    for title, rows, empty in (
        ("config differences", result.config, "the configs are identical"),
        ("final metrics", result.metrics, ""),
    ):
        if not rows:
            console.print(f"[bold]{title}[/]: {empty}")
            continue
        out = Table(title=title, title_justify="left")
        out.add_column("key")
        for name in names:
            out.add_column(name, justify="right")
        for key, values in rows.items():
            out.add_row(key, *(_fmt(v) for v in values))
        console.print(out)
    return 0
