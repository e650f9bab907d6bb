"""Finding runs again: the runs under a folder with their state and results, filtered and
sorted (`hone runs`), and runs side by side (`hone runs compare`).

from hone.runs import list_runs, where, sort_runs
for run in sort_runs(where(list_runs(["runs"]), ["recipe=mlp-digits"]), "best"):
    print(run.name, run.status.label, run.best)

It reads run directories from their small files only (summary.json, status.json, the tail of
metrics.jsonl, config.toml on demand) and imports nothing but the foundation (config,
metrics, run_files): no torch, so the command answers at once, and the engine can use the
status file's format from here (hone.runs.status) without importing upward.
"""

from __future__ import annotations

from hone.runs.compare import Comparison, compare_runs, config_differences, flatten
from hone.runs.query import COLUMNS, Condition, known_keys, sort_runs, where
from hone.runs.records import RunRecord, find_run_dirs, is_run, list_runs, read_run
from hone.runs.status import STATES, Status, status_of

__all__ = [
    "COLUMNS",
    "STATES",
    "Comparison",
    "Condition",
    "RunRecord",
    "Status",
    "compare_runs",
    "config_differences",
    "find_run_dirs",
    "flatten",
    "is_run",
    "known_keys",
    "list_runs",
    "read_run",
    "sort_runs",
    "status_of",
    "where",
]
