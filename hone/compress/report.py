"""The comparison table of a compression (compress.json) and its gate.

The table is `{"method", "source", "details", "threads", "repeats", "gate", "original",
"compressed"}`, each side as `hone.compress.measure.measure` returns it. The gate compares
the metric's drop with `--max-drop`: in points (x100) for a metric where higher is better
(accuracy, r2), in percent of the original for a loss.
"""

from __future__ import annotations

import math
from typing import Any

from hone.metrics import direction


def metric_drop(name: str, before: float, after: float) -> tuple[float, str]:
    """How much worse `after` is than `before`, and the unit: 'points' or '%'."""
    if direction(name) == "max":
        return (before - after) * 100, "points"
    return (after - before) / abs(before) * 100, "%"


def gate(original: dict[str, Any], compressed: dict[str, Any], max_drop: float) -> dict[str, Any]:
    """The gate's verdict: the metric, its drop, the unit, the limit, and whether it passed
    (a non-finite metric never passes)."""
    name = original["metric"]["name"]
    drop, unit = metric_drop(name, original["metric"]["value"], compressed["metric"]["value"])
    passed = math.isfinite(drop) and drop <= max_drop
    return {"metric": name, "drop": drop, "unit": unit, "max_drop": max_drop, "passed": passed}


def gate_message(table: dict[str, Any]) -> str:
    g = table["gate"]
    return (
        f"val {g['metric']} dropped by {g['drop']:.3g} {g['unit']}, over --max-drop "
        f"{g['max_drop']:g} {g['unit']}; nothing written (raise --max-drop to accept it)"
    )


def _ratio(before: float, after: float, better: str, worse: str) -> str:
    """'3.71x smaller' style: before/after, named by which way it went."""
    if before == after:
        return "same"
    if after == 0 or before == 0:
        return ""
    if before > after:
        return f"{before / after:.2f}x {better}"
    return f"{after / before:.2f}x {worse}"


def rows(table: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, original, compressed, change) for each line of the printed table."""
    a, b, g = table["original"], table["compressed"], table["gate"]
    out = [
        ("parameters", f"{a['parameters']:,}", f"{b['parameters']:,}", ""),
        ("nonzero parameters", f"{a['nonzero_parameters']:,}", f"{b['nonzero_parameters']:,}", ""),
        (
            "bytes",
            f"{a['bytes']:,}",
            f"{b['bytes']:,}",
            _ratio(a["bytes"], b["bytes"], "smaller", "larger"),
        ),
        (
            f"val {g['metric']}",
            f"{a['metric']['value']:.4f}",
            f"{b['metric']['value']:.4f}",
            f"{-g['drop'] + 0.0:+.3g} {g['unit']}",  # + 0.0: no "-0"
        ),
    ]
    for key, label in (
        ("latency_ms_batch1", "latency batch 1 (ms)"),
        ("latency_ms_batch64", "latency batch 64 (ms)"),
    ):
        out.append(
            (label, f"{a[key]:.3f}", f"{b[key]:.3f}", _ratio(a[key], b[key], "faster", "slower"))
        )
    if "tokens_per_second" in a:
        before, after = a["tokens_per_second"], b["tokens_per_second"]
        out.append(
            (
                "tokens/s (generation)",
                f"{before:.0f}",
                f"{after:.0f}",
                _ratio(after, before, "faster", "slower"),
            )
        )
    return out


def render(table: dict[str, Any]) -> None:
    """Print the table with rich."""
    from rich.console import Console
    from rich.table import Table

    view = Table(
        title=f"hone compress: {table['method']} ({table['threads']} thread(s), medians of {table['repeats']})"
    )
    for column in ("", "original", "compressed", "change"):
        view.add_column(column, justify="left" if not column else "right")
    for row in rows(table):
        view.add_row(*row)
    Console(highlight=False).print(view)
