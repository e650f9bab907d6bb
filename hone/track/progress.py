"""A live progress bar (rich) that costs nothing between log steps and is quiet off a terminal.

Both the bar and the summary table write to stderr through `StderrConsole`, which falls silent
when stderr's reader goes away (`hone train 2>&1 | head`): training goes on, nothing raises.
In a Jupyter notebook the bar is one output of the cell, replaced in place at most once a
second (`NotebookView`): a terminal's redraws would each add an output, and rich's own live
display there needs ipywidgets.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Column, Table
from rich.text import Text

# A notebook's bar is redrawn at most this often: each redraw is a message to the browser.
NOTEBOOK_REFRESH_SECONDS = 1.0
NOTEBOOK_HTML = '<pre style="white-space:pre;overflow-x:auto;line-height:normal">{code}</pre>'


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


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=max(0, int(seconds))))  # 0:02:05


class TimeColumn(ProgressColumn):
    """Time elapsed and, when the total is known, time left at the step rate of the last 30
    seconds (rich's estimate, evaluations included): "0:00:21 elapsed, 0:02:00 left"."""

    def render(self, task: Task) -> Text:
        elapsed = f"{_clock(task.elapsed or 0.0)} elapsed"
        if task.total is None:
            return Text(elapsed, style="progress.elapsed")
        left = task.time_remaining
        return Text(
            f"{elapsed}, {'-:--:--' if left is None else _clock(left)} left",
            style="progress.remaining",
        )


class InfoColumn(ProgressColumn):
    """Loss, lr and throughput, cut short (not wrapped) when the terminal is too narrow: the
    table shrinks this column first, so step and times stay whole."""

    def render(self, task: Task) -> Text:
        return Text(task.fields["info"], no_wrap=True, overflow="ellipsis")


class NotebookView:
    """One output of a notebook cell that each `show` replaces (an IPython display handle),
    drawn by a console of its own that records instead of writing."""

    def __init__(self, width: int) -> None:
        self.console = Console(
            file=io.StringIO(),
            record=True,
            width=width,
            force_jupyter=False,
            color_system="truecolor",
        )
        self._handle: Any = None

    def show(self, renderable: Any) -> None:
        self.console.print(renderable)
        bundle = {
            "text/plain": self.console.export_text(clear=False).rstrip("\n"),
            "text/html": self.console.export_html(inline_styles=True, code_format=NOTEBOOK_HTML),
        }
        if self._handle is None:
            from IPython.display import display  # only ever in a notebook, where IPython is

            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)


class ProgressBar:
    """Step, time elapsed and left, loss, lr and throughput; refreshed when the trainer logs,
    at most every `refresh_seconds` (in a notebook, NOTEBOOK_REFRESH_SECONDS). The time left
    is shown when the run's total steps are known (bounded by steps or epochs)."""

    def __init__(
        self,
        total_steps: int | None,
        mode: str,
        enabled: bool = True,
        console: Console | None = None,
        refresh_seconds: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console or StderrConsole()
        notebook = self.console.is_jupyter
        on = mode == "on" or (mode == "auto" and (notebook or sys.stderr.isatty()))
        if notebook:
            refresh_seconds = max(refresh_seconds, NOTEBOOK_REFRESH_SECONDS)
        self.refresh_seconds, self.clock = refresh_seconds, clock
        self._view: NotebookView | None = None
        self._progress: Progress | None = None
        self._pending: tuple[int, str] | None = None  # the last update not yet shown
        self._shown_at = -math.inf
        if not (on and enabled):
            return
        if notebook:
            self._view = NotebookView(self.console.width)
        steps = "step {task.completed}" + ("/{task.total}" if total_steps else "")
        self._progress = Progress(
            TextColumn(f"[bold]{steps}", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=20, table_column=Column(no_wrap=True)),
            TimeColumn(table_column=Column(no_wrap=True)),
            InfoColumn(),
            console=self._view.console if self._view else self.console,
            auto_refresh=False,  # no refresh thread competing with the training loop
            get_time=clock,
        )
        self._task = self._progress.add_task("train", total=total_steps, info="")
        if self._view is None:  # a notebook's view is drawn at the first update
            self._progress.start()

    def update(self, step: int, info: str) -> None:
        """Show `step` and `info`; within `refresh_seconds` of the last refresh, only keep them
        for the next one (a refresh cost ~160 us: at every log step of a fast run, a
        measurable part of the step time)."""
        if self._progress is None:
            return
        self._pending = (step, info)
        if self.clock() - self._shown_at >= self.refresh_seconds:
            self._show()

    def _show(self) -> None:
        assert self._progress is not None and self._pending is not None
        step, info = self._pending
        self._progress.update(self._task, completed=step, info=info)
        if self._view is not None:
            self._view.show(self._progress.get_renderable())
        else:
            self._progress.refresh()
        self._pending, self._shown_at = None, self.clock()

    def close(self) -> None:
        if self._progress is not None:
            if self._pending is not None:  # the last state is always shown
                self._show()
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
