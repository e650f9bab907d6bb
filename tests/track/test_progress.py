"""The progress bar and the summary table write to stderr, and a reader of stderr that leaves
(`hone train 2>&1 | head -1`) ends neither them nor the run; the bar shows the time elapsed
and the time left."""

from __future__ import annotations

import io
import os
import re
import sys

import pytest
from rich.console import Console

from hone.track.progress import ProgressBar, print_summary


def test_a_closed_stderr_silences_the_bar_and_the_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write
    with open(write_end, "w") as closed:
        monkeypatch.setattr(sys, "stderr", closed)
        bar = ProgressBar(total_steps=10, mode="on")
        for step in range(1, 11):
            bar.update(step, f"loss {1 / step:.3f}")
        bar.close()
        print_summary({"steps": 10, "best_val_loss": 0.5})
        assert bar.console.quiet
        closed.write("later text goes to os.devnull\n")
        closed.flush()  # as the interpreter's last flush would: it must not fail


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rendered(total_steps: int | None, updates: list[tuple[float, int]], width: int = 120) -> str:
    """What the bar writes to a terminal, given (seconds, step) updates."""
    out, clock = io.StringIO(), Clock()
    console = Console(file=out, force_terminal=True, width=width)
    bar = ProgressBar(total_steps, mode="on", console=console, clock=clock)
    for seconds, step in updates:
        clock.now = seconds
        bar.update(step, f"loss {1 / step:.3f}")
    bar.close()
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # without colours and cursor moves


def test_the_bar_shows_elapsed_time_and_the_time_left_from_the_step_rate() -> None:
    # 100 steps in the last 10 seconds: the 800 steps left take 80 seconds more.
    text = rendered(1000, [(10.0, 100), (20.0, 200)])
    assert "step 200/1000" in text and "0:00:20 elapsed, 0:01:20 left" in text


def test_a_narrow_terminal_cuts_the_loss_short_not_the_time_left() -> None:
    text = rendered(1000, [(10.0, 100), (20.0, 200)], width=72)
    assert "step 200/1000" in text and "0:00:20 elapsed, 0:01:20 left" in text
    assert "…" in text  # the loss and lr behind them were cut


def test_a_run_bounded_by_time_only_shows_no_time_left() -> None:
    text = rendered(None, [(10.0, 50), (20.0, 100)])
    assert "step 100 " in text and "0:00:20 elapsed" in text
    assert "left" not in text and "None" not in text


def test_updates_closer_than_the_refresh_interval_wait_for_the_next_refresh() -> None:
    text = rendered(1000, [(10.0, 100), (10.1, 110), (10.2, 120)])
    assert "step 100/1000" in text and "step 110/1000" not in text
    assert "step 120/1000" in text  # shown when the bar closes
