"""`hone doctor RUN [--json]`: what went wrong with a training run, and what to change;
`hone doctor --list-findings [--json]`: every finding id it can report, and what it means."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from hone.cli.output import add_json_flag, print_json
from hone.errors import ConfigError, ExitCode

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def add_parser(sub: Any) -> None:
    """Add `doctor` to the `hone` subcommands (`sub` is argparse's subparsers object)."""
    p = sub.add_parser(
        "doctor",
        help="diagnose a training run: what went wrong and which config keys to change",
        description=(
            "Read a run directory (live, finished or stopped) and report findings, the "
            "diagnosis first. Exit code 0 when no finding is an error, 1 when one is."
        ),
    )
    p.add_argument("run_dir", nargs="?", help="a run directory written by `hone train`")
    p.add_argument(
        "--list-findings",
        action="store_true",
        help="list every finding id with its one-line definition, and the severities",
    )
    add_json_flag(p, "the report (or the list of findings)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from hone.doctor import diagnose

    if args.list_findings:
        return list_findings(args.json)
    if args.run_dir is None:
        raise ConfigError(
            "hone doctor needs a run directory, got none; pass the directory `hone train` "
            "printed at its end, or --list-findings to see what doctor can find"
        )
    report = diagnose(args.run_dir)
    if args.json:
        print_json(report)
    else:
        render(report)
    return ExitCode.OK if report["healthy"] else ExitCode.FAILED


def list_findings(as_json: bool) -> int:
    from hone.doctor import DEFINITIONS, SEVERITY_MEANINGS

    if as_json:
        print_json(
            {
                "findings": [{"id": k, "definition": v} for k, v in DEFINITIONS.items()],
                "severities": SEVERITY_MEANINGS,
            }
        )
        return ExitCode.OK
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column(no_wrap=True)
    table.add_column()
    for finding_id, definition in DEFINITIONS.items():
        table.add_row(f"[bold]{finding_id}[/]", definition)
    table.add_row("", "")
    for severity, meaning in SEVERITY_MEANINGS.items():
        table.add_row(f"[{SEVERITY_STYLE[severity]}]{severity}[/]", meaning)
    Console(highlight=False).print(table)
    return ExitCode.OK


def render(report: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    findings = report["findings"]
    title = f"hone doctor {report['run']} ({report['steps']} steps)"
    if not report["statistics"]:
        title += ", no training statistics (log.stats_every=0): loss-based findings only"
    if report.get("adapters"):
        title += "; LoRA adapters on a frozen model: the statistics are the adapters'"
    console.print(f"[bold]{title}[/]")
    if not findings:
        console.print("[green]healthy[/]: no finding")
        return
    for i, finding in enumerate(findings):
        style = SEVERITY_STYLE[finding["severity"]]
        head = "diagnosis" if i == 0 and finding["severity"] == "error" else finding["severity"]
        console.print(f"\n[{style}]{head}: {finding['id']}[/] — {finding['summary']}")
        evidence = ", ".join(f"{k}={v}" for k, v in finding["evidence"].items() if v is not None)
        console.print(f"  evidence: {evidence}")
        console.print(f"  why: {finding['why']}")
        if finding["fix"]:
            console.print(
                f"  try: hone train {report['run']}/config.toml {shlex.join(finding['fix'])}"
            )
