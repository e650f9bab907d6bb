"""A run directory's records, read beside the names of its files (hone.run_files): the one
reader that `hone runs`, `hone doctor`, `hone report` and the MLflow mirror share, torch-free.

`reader`: config, summary, metrics events and statistics, the one decoder of logged numbers
(`number`, `as_number`) and the one rule for a run's task metric (`task_metric`). `status`:
the status file's format, which the engine writes and the readers interpret.
"""

from __future__ import annotations

from hone.run_records import status
from hone.run_records.reader import (
    NOT_MEASURED,
    Statistics,
    as_number,
    number,
    read_config,
    read_events,
    read_json,
    read_statistics,
    read_summary,
    task_metric,
)

__all__ = [
    "NOT_MEASURED",
    "Statistics",
    "as_number",
    "number",
    "read_config",
    "read_events",
    "read_json",
    "read_statistics",
    "read_summary",
    "status",
    "task_metric",
]
