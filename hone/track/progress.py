"""A live progress bar (rich) that costs nothing between log steps and is quiet off a terminal."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class ProgressBar:
    """Step, loss, lr, throughput and ETA; refreshed only when the trainer logs."""

    def __init__(self, total_steps: int | None, mode: str, enabled: bool = True) -> None:
        on = mode == "on" or (mode == "auto" and sys.stderr.isatty())
        self.console = Console(stderr=True)
        self._progress: Progress | None = None
        if not (on and enabled):
            return
        self._progress = Progress(
            TextColumn("[bold]step {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            auto_refresh=False,  # no refresh thread competing with the training loop
        )
        self._task = self._progress.add_task("train", total=total_steps, info="")
        self._progress.start()

    def update(self, step: int, info: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=info)
            self._progress.refresh()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def print_summary(rows: dict[str, Any], title: str = "summary") -> None:
    """A short two-column table on stderr (stdout stays free for machine-readable output)."""
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in rows.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        table.add_row(key, str(value))
    Console(stderr=True).print(table)
