"""Finding runs again: the runs under a folder with their state and results, filtered and
sorted (`hone runs`), and runs side by side (`hone runs compare`).

from hone.runs import list_runs, where, sort_runs
for run in sort_runs(where(list_runs(["runs"]), ["recipe=mlp-digits"]), "best"):
    print(run.name, run.status.label, run.best)

It reads run directories from their small files only (summary.json, status.json, the tail of
metrics.jsonl, config.toml on demand) through the foundation's reader of run records
(hone.run_records): no torch, so the command answers at once.
"""

from __future__ import annotations

from hone.runs.compare import Comparison, compare_runs, config_differences, flatten
from hone.runs.query import COLUMNS, Condition, known_keys, sort_runs, where
from hone.runs.records import RunRecord, find_run_dirs, is_run, list_runs, read_run

__all__ = [
    "COLUMNS",
    "Comparison",
    "Condition",
    "RunRecord",
    "compare_runs",
    "config_differences",
    "find_run_dirs",
    "flatten",
    "is_run",
    "known_keys",
    "list_runs",
    "read_run",
    "sort_runs",
    "where",
]
