"""The runs under a folder, one `RunRecord` each, read from small files only.

A run directory is a folder holding a config.toml, summary.json or status.json (what a
trainer writes first, last, and in between); the search does not descend into one (its
checkpoints, folds and tokenizer are not runs). A record is read from summary.json and
status.json, and for a run without a summary (running, killed) from the last few kilobytes
of metrics.jsonl: never the whole metrics file, so a folder of a thousand runs lists in a
fraction of a second (bench/runs_table.py).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hone.run_files import CONFIG, CV, STATUS, SUMMARY, RunFiles
from hone.run_records import (
    as_number,
    read_config,
    read_events,
    read_json,
    read_summary,
    task_metric,
)
from hone.run_records.status import Status, status_of

_MARKERS = (CONFIG, SUMMARY, STATUS, CV)
TAIL_BYTES = 16384  # of metrics.jsonl read for a run without a summary: its last events


@dataclass
class RunRecord:
    """One run as `hone runs` lists it; `values()` is what --where and --sort see."""

    path: Path
    name: str  # the path relative to the folder that was listed
    status: Status
    summary: dict[str, Any] = field(default_factory=dict)
    recipe: str = ""
    steps: int | None = None
    total_steps: int | None = None  # planned, while running
    metric: str = ""  # the task metric: accuracy, perplexity, r2, ...
    metric_direction: str = ""  # "min" or "max"; "" when unknown
    best: float | None = None  # the best validation value of `metric`
    best_val_loss: float | None = None
    wall_seconds: float | None = None
    tokens_per_second: float | None = None
    steps_per_second: float | None = None
    started: datetime | None = None
    _config: dict[str, Any] | None = None

    def config(self) -> dict[str, Any]:
        """The run's config.toml as a dict (read on first use: only --where on a config key
        or `compare` need it)."""
        if self._config is None:
            self._config = read_config(RunFiles(self.path))
        return self._config

    def columns(self) -> dict[str, Any]:
        """The table's columns, by name."""
        return {
            "name": self.name,
            "recipe": self.recipe,
            "status": self.status.label,
            "steps": self.steps,
            "best": self.best,
            "metric": self.metric,
            "best_val_loss": self.best_val_loss,
            "wall_seconds": self.wall_seconds,
            "tokens_per_second": self.tokens_per_second,
            "steps_per_second": self.steps_per_second,
            "started": self.started.isoformat(timespec="seconds") if self.started else None,
        }

    def values(self) -> dict[str, Any]:
        """Everything a filter may name: the columns, the summary's keys, and the state."""
        return {
            **self.summary,
            **self.columns(),
            "state": self.status.state,
            "exit_code": self.status.exit_code,
            "path": str(self.path),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **self.columns(),
            "state": self.status.state,
            "status_detail": self.status.detail,
            "exit_code": self.status.exit_code,
            "total_steps": self.total_steps,
            "path": str(self.path),
            "summary": self.summary,
        }


def _finite(value: Any) -> float | None:
    """A logged number as the table shows it: None when missing or not finite (diverged)."""
    decoded = as_number(value)
    return decoded if decoded is not None and math.isfinite(decoded) else None


def _recipe_of(record: RunRecord) -> str:
    """The recipe named in config.toml's first lines (cheaper than parsing the file)."""
    try:
        with open(RunFiles(record.path).config) as f:
            for _, line in zip(range(5), f, strict=False):
                if line.startswith("recipe = "):
                    return str(json.loads(line.split("=", 1)[1]))
    except (OSError, ValueError):
        pass
    return ""


def read_run(path: str | Path, name: str = "") -> RunRecord:
    """One run directory's record."""
    files = RunFiles(path)
    # A k-fold run's own folder holds cv.json (its folds are runs inside it) instead, and
    # `hone compress`'s output compress.json (a finished model, trained or not).
    summary = read_summary(files) or read_json(files.cv)
    if summary is None and (compressed := read_json(files.compress)) is not None:
        summary = {"stop_reason": "compressed", "method": compressed.get("method")}
    state = status_of(files, summary)
    info = state.record or {}
    record = RunRecord(files.root, name or files.root.name, state, summary or {})
    s = record.summary
    record.recipe = str(s.get("recipe") or info.get("recipe") or "") or _recipe_of(record)
    # Running or dead: the last logged events are newer than a heartbeat.
    events = {} if summary is not None else read_events(files, TAIL_BYTES)
    record.metric, record.metric_direction = task_metric(summary, info, events.get("val", []))
    best_val = info.get("best_val") or {}
    record.best = _finite(s.get("best_val_metric_mean", s.get("best_val_metric")))
    record.best_val_loss = _finite(s.get("best_val_loss_mean", s.get("best_val_loss")))
    if summary is None:
        record.best = _finite(best_val.get(f"val_{record.metric}"))
        record.best_val_loss = _finite(best_val.get("val_loss"))
    record.steps = s.get("steps", info.get("step"))
    record.wall_seconds = _finite(s.get("wall_seconds", info.get("train_seconds")))
    record.total_steps = info.get("total_steps")
    record.tokens_per_second = _finite(info.get("tokens_per_second"))
    _from_train_events(record, events.get("train", []))
    if record.steps and record.wall_seconds:
        record.steps_per_second = record.steps / record.wall_seconds
    record.started = _started(files, info)
    return record


def _from_train_events(record: RunRecord, events: list[dict[str, Any]]) -> None:
    for event in events:
        record.steps = max(record.steps or 0, int(event.get("step", 0)))
        record.wall_seconds = _finite(event.get("elapsed")) or record.wall_seconds
        if "tokens_per_second" in event:
            record.tokens_per_second = _finite(event["tokens_per_second"])


def _started(files: RunFiles, info: dict[str, Any]) -> datetime | None:
    """When the run started: the status file says; else config.toml's time (written first)."""
    if isinstance(info.get("started"), int | float):
        return datetime.fromtimestamp(info["started"], UTC).astimezone()
    try:
        return datetime.fromtimestamp(files.config.stat().st_mtime, UTC).astimezone()
    except OSError:
        return None


def is_run(path: Path) -> bool:
    """Whether `path` is a run directory."""
    return any((path / marker).is_file() for marker in _MARKERS)


def find_run_dirs(root: Path) -> Iterator[Path]:
    """Run directories under `root` (itself included), not looking inside a run or hidden
    folders, in name order."""
    if is_run(root):
        yield root
        return
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir() and not entry.name.startswith("."):
            yield from find_run_dirs(Path(entry.path))


def list_runs(roots: Iterable[str | Path]) -> list[RunRecord]:
    """The records of every run under each of `roots`, named relative to their root."""
    records = []
    for root in map(Path, roots):
        for path in find_run_dirs(root):
            name = str(path.relative_to(root)) if path != root else path.name
            records.append(read_run(path, name))
    return records
