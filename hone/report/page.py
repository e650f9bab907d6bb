"""One self-contained HTML page: Plotly's JavaScript inlined once in the head, every figure a
div drawn by it, the rest plain HTML and a little CSS. It opens from disk with no network.

Every figure sits in a `<section class="plot" data-plot=SLUG>`, which is what the browser
test counts; the text blocks (cards, tables, findings, config) are escaped here, once.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from hone.report.figures import Plot

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
STATE_COLORS = {
    "running": "#0b7dda",
    "finished": "#1a7f37",
    "stopped": "#b7791f",
    "failed": "#c62828",
    "killed": "#c62828",
    "pruned": "#6b7280",
    "incomplete": "#6b7280",
}
SEVERITY_COLORS = {"error": "#c62828", "warning": "#b7791f", "info": "#0b7dda"}

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  margin: 0; background: #f5f6f8; color: #1f2328; }
header { background: #fff; border-bottom: 1px solid #d8dee4; padding: 18px 28px 14px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .sub { color: #57606a; font-size: 13px; }
main { padding: 18px 28px 40px; max-width: 1600px; }
h2 { font-size: 17px; margin: 26px 0 10px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; padding: 10px 14px;
  min-width: 130px; }
.card .label { color: #57606a; font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
.card .value { font-size: 20px; font-weight: 600; margin-top: 2px; }
.card .more { color: #57606a; font-size: 12px; }
.banner { background: #e8f2fc; border: 1px solid #9cc7ef; border-radius: 8px;
  padding: 10px 14px; margin-bottom: 12px; }
.banner.warn { background: #fdf0e6; border-color: #f0b37e; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 14px; }
.plot { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; padding: 6px 8px 4px; }
.plot .note { color: #57606a; font-size: 12px; margin: 2px 8px 6px; }
table { border-collapse: collapse; background: #fff; border: 1px solid #d8dee4; }
th, td { padding: 5px 10px; border-bottom: 1px solid #eaeef2; text-align: left;
  vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.state { font-weight: 600; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 6px; }
pre { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; padding: 10px 14px;
  overflow: auto; max-height: 480px; font-size: 12.5px; }
details { margin: 8px 0; }
summary { cursor: pointer; font-weight: 600; }
.muted { color: #57606a; }
code { font-size: 12.5px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A number as people read it: 4 significant digits, thousands separated."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        if abs(value) >= 1e4:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, rest = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {rest:02d} s" if minutes else f"{seconds:.1f} s"


def state_html(state: str, label: str) -> str:
    color = STATE_COLORS.get(state, "#1f2328")
    return f'<span class="state" style="color:{color}">{esc(label)}</span>'


def cards(items: Sequence[tuple[str, str, str]]) -> str:
    """Cards of (label, value as HTML, a smaller line under it)."""
    out = []
    for label, value, more in items:
        extra = f'<div class="more">{esc(more)}</div>' if more else ""
        out.append(
            f'<div class="card"><div class="label">{esc(label)}</div>'
            f'<div class="value">{value}</div>{extra}</div>'
        )
    return f'<div class="cards">{"".join(out)}</div>'


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], raw: bool = False) -> str:
    """An HTML table; numbers right-aligned. With `raw`, cells are HTML already."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            number = isinstance(cell, int | float) and not isinstance(cell, bool)
            text = cell if raw and isinstance(cell, str) else esc(fmt(cell))
            cells.append(f'<td class="num">{text}</td>' if number else f"<td>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def plot_html(plot: Plot, index: int) -> str:
    div = plot.figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        config={**PLOTLY_CONFIG, "toImageButtonOptions": {"filename": plot.slug}},
        div_id=f"plot-{index}-{plot.slug}",
    )
    note = f'<p class="note">{esc(plot.note)}</p>' if plot.note else ""
    return f'<section class="plot" data-plot="{esc(plot.slug)}">{div}{note}</section>'


def plots_html(plots: Sequence[Plot]) -> str:
    return f'<div class="grid">{"".join(plot_html(p, i) for i, p in enumerate(plots))}</div>'


class Page:
    """A report page: a header, then sections of HTML in order."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title, self.subtitle = title, subtitle
        self.sections: list[str] = []

    def add(self, heading: str, body: str) -> None:
        self.sections.append((f"<h2>{esc(heading)}</h2>" if heading else "") + body)

    def render(self) -> str:
        from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

        made = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        subtitle = f"{esc(self.subtitle)} · " if self.subtitle else ""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)}</title><style>{CSS}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
            f'<header><h1>{esc(self.title)}</h1><div class="sub">{subtitle}'
            f"written by hone report at {esc(made)}</div></header>"
            f"<main>{''.join(self.sections)}</main></body></html>\n"
        )

    def write(self, path: Path) -> Path:
        """Write the page atomically (a browser reloading it never sees half a page)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(self.render(), encoding="utf-8")
        os.replace(tmp, path)
        return path
