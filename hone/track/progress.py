"""A live progress bar (rich) that costs nothing between log steps and is quiet off a terminal.

Both the bar and the summary table write to stderr through `StderrConsole`, which falls silent
when stderr's reader goes away (`hone train 2>&1 | head`): training goes on, nothing raises.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class StderrConsole(Console):
    """A rich Console on stderr that goes quiet when the pipe behind it is closed.

    rich's default answer to a broken pipe is to point stdout at os.devnull and raise
    SystemExit(1): right for a program whose output is the point, wrong for the progress of a
    run that should finish and write its files whether or not anyone still watches.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(stderr=True, **kwargs)

    def on_broken_pipe(self) -> None:
        self.quiet = True  # rich drops all later output of a quiet console
        # Unless Python runs unbuffered the failed text stays in stderr's buffer, and the
        # interpreter's final flush would fail on it again (and exit 120): stderr's
        # descriptor now leads to os.devnull.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.file.fileno())
        os.close(devnull)


class ProgressBar:
    """Step, loss, lr, throughput and ETA; refreshed only when the trainer logs."""

    def __init__(self, total_steps: int | None, mode: str, enabled: bool = True) -> None:
        on = mode == "on" or (mode == "auto" and sys.stderr.isatty())
        self.console = StderrConsole()
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
    StderrConsole().print(table)
