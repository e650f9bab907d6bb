"""Reading a run directory's records: config, summary, metrics events and training statistics.

The trainer writes them (hone.track.run, hone.engine.stats, hone.engine.shell); `hone runs`,
`hone doctor`, `hone report` read them here, from their files only: no torch, no model. A
live run is read as it stands: a line cut short by the writer is skipped, and a step written
twice (a rollback redoes steps, a resumed run repeats those after its checkpoint) keeps its
last record.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hone.metrics import METRICS
from hone.run_files import RunFiles

# Keys of a metrics event that place it (when, which split) rather than measure something.
NOT_MEASURED = ("step", "split", "epoch")
# Events that happen rather than measure a step: every one is kept, in the order logged.
OCCURRENCES = ("fault", "sample")


def as_number(value: Any) -> float | None:
    """A logged number as a float; None for what is no number (missing, text, a bool).

    JSON has no NaN or infinity, so the run files hold them as strings ("nan", "inf",
    "-inf"): those read as the floats they stand for.
    """
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def number(value: Any) -> float:
    """`as_number`, with NaN for what is no number: for series, which keep finite values."""
    decoded = as_number(value)
    return math.nan if decoded is None else decoded


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file (summary.json, status.json, cv.json); None when there is none, or
    it is cut short or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_lines(path: Path, tail_bytes: int = 0) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file (metrics, stats), oldest first; with `tail_bytes`,
    only those in its last `tail_bytes` (a line cut there is skipped, as one cut by a kill)."""
    try:
        with open(path, "rb") as f:
            if tail_bytes:
                f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
            lines = f.read().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_config(files: RunFiles) -> dict[str, Any]:
    """The run's config.toml as a dict; {} when it has none (or it is not TOML)."""
    try:
        return tomllib.loads(files.config.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def read_summary(files: RunFiles) -> dict[str, Any] | None:
    """summary.json: what the run achieved, written at its end; None while it has none."""
    return read_json(files.summary)


def last_per_step(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step, the last written, in step order."""
    by_step = {int(r.get("step", 0)): r for r in records}
    return [by_step[s] for s in sorted(by_step)]


def read_events(files: RunFiles, tail_bytes: int = 0) -> dict[str, list[dict[str, Any]]]:
    """metrics.jsonl by split: train, val, test, ... one event per step (the last logged), in
    step order; faults and samples every one, in the order logged. `tail_bytes`: only the
    events in the file's last bytes (`hone runs` of a run without a summary)."""
    by_split: dict[str, list[dict[str, Any]]] = {}
    for event in read_lines(files.metrics, tail_bytes):
        by_split.setdefault(str(event.get("split", "train")), []).append(event)
    return {
        split: found if split in OCCURRENCES else last_per_step(found)
        for split, found in by_split.items()
    }


@dataclass
class Statistics:
    """stats.jsonl (`log.stats_every`): the evidence of how training went inside the model."""

    run: dict[str, Any] = field(default_factory=dict)  # once: initial vs uniform loss, inputs
    layers: list[dict[str, Any]] = field(default_factory=list)  # per layer, one per step
    non_finite: list[dict[str, Any]] = field(default_factory=list)  # the NaN probe's records


def read_statistics(files: RunFiles) -> Statistics:
    """The run's training statistics; empty when they were off."""
    stats = Statistics()
    layers = []
    for record in read_lines(files.stats):
        kind = record.get("kind")
        if kind == "run":
            stats.run = record
        elif kind == "layers":
            layers.append(record)
        elif kind == "non_finite":
            stats.non_finite.append(record)
    stats.layers = last_per_step(layers)
    return stats


def task_metric(
    summary: dict[str, Any] | None,
    status: dict[str, Any] | None,
    val_events: list[dict[str, Any]],
) -> tuple[str, str]:
    """(name, direction) of the run's task metric (accuracy, perplexity, r2, ...), besides
    the loss: summary.json's `metric`, else (a live run) the status file's, else (a run from
    before either said) the first built-in metric a validation event holds, else its first
    number besides the loss. A user's own metric (`hone.Trainer(metrics=...)`) takes its
    direction ("min" or "max") from the summary's `metric_directions`; "" when unknown."""
    directions = dict((summary or {}).get("metric_directions") or {})
    name = str((summary or {}).get("metric") or (status or {}).get("metric") or "")
    if not name:
        skip = (*NOT_MEASURED, "loss")
        keys = [k for e in val_events[:1] for k in e if k not in skip]
        name = next((k for k in keys if k in METRICS), keys[0] if keys else "")
    known = METRICS.get(name)
    return name, str(directions.get(name) or (known.direction if known else ""))
