"""The report of one run, or of several overlaid: key numbers first, then what the doctor
found, the plots, test metrics, the sample of a language model, and the config (for several
runs, what differs).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from hone.report.data import RunData
from hone.report.figures import PALETTE, run_plots
from hone.report.page import (
    SEVERITY_COLORS,
    Page,
    cards,
    duration,
    esc,
    fmt,
    plots_html,
    state_html,
    table,
)
from hone.runs import config_differences


def _throughput(run: RunData) -> str:
    r = run.record
    if r.tokens_per_second:
        return f"{fmt(r.tokens_per_second)} tok/s"
    if r.steps_per_second:
        return f"{r.steps_per_second:.1f} steps/s"
    return ""


def _steps(run: RunData) -> str:
    r = run.record
    if r.steps is None:
        return ""
    return f"{fmt(r.steps)} / {fmt(r.total_steps)}" if r.total_steps else fmt(r.steps)


def _summary_cards(run: RunData) -> str:
    r, s = run.record, run.record.summary
    test = run.test_metrics()
    metric = run.metric
    items = [
        ("status", state_html(r.status.state, r.status.label), r.status.detail[:60]),
        ("steps", esc(_steps(run)), str(s.get("stop_reason", ""))),
    ]
    if r.best is not None:
        items.append((f"best val {metric}", esc(fmt(r.best)), ""))
    if r.best_val_loss is not None:
        items.append(("best val loss", esc(fmt(r.best_val_loss)), ""))
    if metric in test:
        items.append(
            (f"test {metric}", esc(fmt(test[metric])), f"test loss {fmt(test.get('loss'))}")
        )
    items.append(("training time", esc(duration(r.wall_seconds)), _throughput(run)))
    if "num_parameters" in s:
        items.append(("parameters", esc(fmt(s["num_parameters"])), str(s.get("device", ""))))
    if r.started:
        items.append(("started", esc(r.started.strftime("%Y-%m-%d %H:%M")), r.recipe))
    return cards(items)


def _runs_table(runs: Sequence[RunData]) -> str:
    rows = []
    for i, run in enumerate(runs):
        r = run.record
        swatch = f'<span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></span>'
        test = run.test_metrics()
        rows.append(
            [
                swatch + esc(run.name),
                esc(r.recipe),
                state_html(r.status.state, r.status.label),
                esc(_steps(run)),
                esc(f"{run.metric} {fmt(r.best)}" if r.best is not None else ""),
                esc(fmt(r.best_val_loss)),
                esc(fmt(test.get(run.metric)) if run.metric in test else ""),
                esc(duration(r.wall_seconds)),
                esc(_throughput(run)),
                esc(str(run.path)),
            ]
        )
    headers = ["run", "recipe", "status", "steps", "best val", "best val loss", "test", "time"]
    return table([*headers, "throughput", "folder"], rows, raw=True)


def _live_banner(runs: Sequence[RunData]) -> str:
    live = [run for run in runs if run.record.status.state == "running"]
    if not live:
        return ""
    parts = []
    for run in live:
        info = run.record.status.record or {}
        age = time.time() - float(info.get("heartbeat", time.time()))
        parts.append(f"{run.name} is training (step {_steps(run)}, heartbeat {age:.0f} s ago)")
    return (
        f'<div class="banner">{esc("; ".join(parts))}. This page shows what was on disk when '
        "it was written; run <code>hone report</code> again to bring it up to date.</div>"
    )


# What a person should know first about a run that did not finish, by state.
_ENDINGS = {
    "failed": "This run failed",
    "killed": "This run was killed before it could finish (no summary)",
    "stopped": "This run was stopped by a signal after a checkpoint; "
    "<code>hone train --resume RUN</code> continues it",
}


def _ending_banner(runs: Sequence[RunData]) -> str:
    parts = []
    for run in runs:
        state = run.record.status
        if state.state in _ENDINGS:
            why = f": {esc(state.detail)}" if state.detail else ""
            name = f"{esc(run.name)}: " if len(runs) > 1 else ""
            parts.append(f"{name}{_ENDINGS[state.state]}{why}.")
    return f'<div class="banner warn">{"<br>".join(parts)}</div>' if parts else ""


def _findings(runs: Sequence[RunData]) -> str:
    from hone.doctor import diagnose

    rows = []
    for run in runs:
        report = diagnose(run.path)
        for finding in report["findings"]:
            color = SEVERITY_COLORS.get(finding["severity"], "#1f2328")
            fix = " ".join(finding["fix"])
            rows.append(
                [
                    *([esc(run.name)] if len(runs) > 1 else []),
                    f'<b style="color:{color}">{esc(finding["severity"])}</b>',
                    f"<b>{esc(finding['id'])}</b><br>{esc(finding['summary'])}",
                    esc(finding["why"]),
                    f"<code>{esc(fix)}</code>" if fix else "",
                ]
            )
    live = any(run.record.status.state == "running" for run in runs)
    so_far = " so far (the training goes on)" if live else ""
    if not rows:
        return f'<p class="muted">No finding{so_far}: the doctor saw nothing wrong.</p>'
    headers = [*(["run"] if len(runs) > 1 else []), "severity", "finding", "why", "try"]
    note = f'<p class="muted">Findings{so_far}; <code>hone doctor RUN</code> says more.</p>'
    return note + table(headers, rows, raw=True)


def _tests(runs: Sequence[RunData]) -> str:
    tests = [run.test_metrics() for run in runs]
    keys = list(dict.fromkeys(k for t in tests for k in t))
    if not keys:
        return ""
    rows: list[list[Any]] = [
        [run.name, *(t.get(k) for k in keys)] for run, t in zip(runs, tests, strict=True)
    ]
    return table(["run", *keys], rows)


def _samples(runs: Sequence[RunData]) -> str:
    out = []
    for run in runs:
        if run.samples:
            last = run.samples[-1]
            title = (
                f"{run.name}, step {last.get('step')}"
                if len(runs) > 1
                else f"step {last.get('step')}"
            )
            out.append(f"<p class='muted'>{esc(title)}</p><pre>{esc(last.get('text', ''))}</pre>")
    return "".join(out)


def _config(runs: Sequence[RunData]) -> str:
    if len(runs) == 1:
        return f"<details open><summary>config.toml</summary><pre>{esc(runs[0].config_text)}</pre></details>"
    differences = config_differences([run.record for run in runs])
    head = (
        table(
            ["key", *(run.name for run in runs)],
            [[k, *("" if x is None else str(x) for x in v)] for k, v in differences.items()],
        )
        if differences
        else '<p class="muted">The configs are identical.</p>'
    )
    full = "".join(
        f"<details><summary>{esc(run.name)}: config.toml</summary><pre>{esc(run.config_text)}</pre></details>"
        for run in runs
    )
    return head + full


def run_page(runs: Sequence[RunData]) -> Page:
    """The page of `runs` (one, or several overlaid)."""
    if len(runs) == 1:
        run = runs[0]
        page = Page(f"hone report: {run.name}", f"{run.record.recipe} · {run.path}")
        page.add("", _live_banner(runs) + _ending_banner(runs) + _summary_cards(run))
    else:
        page = Page(f"hone report: {len(runs)} runs", ", ".join(run.name for run in runs))
        page.add("Runs", _live_banner(runs) + _ending_banner(runs) + _runs_table(runs))
    page.add("What the doctor found", _findings(runs))
    plots = run_plots(runs)
    page.add("Training", plots_html(plots) if plots else '<p class="muted">Nothing logged yet.</p>')
    if tests := _tests(runs):
        page.add("Test metrics", tests)
    if samples := _samples(runs):
        page.add("Sample", samples)
    page.add("Config" if len(runs) == 1 else "Config differences", _config(runs))
    return page
