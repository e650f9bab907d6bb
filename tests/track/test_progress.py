"""The progress bar and the summary table write to stderr, and a reader of stderr that leaves
(`hone train 2>&1 | head -1`) ends neither them nor the run; the bar shows the time elapsed
and the time left."""

from __future__ import annotations

import io
import os
import re
import sys
from datetime import datetime

import pytest
from rich.console import Console

from hone.track.progress import NOTEBOOK_REFRESH_SECONDS, ProgressBar, print_summary


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


BAR_CELL = """\
import time
from hone.track.progress import ProgressBar

bar = ProgressBar(total_steps=3000, mode="auto")
for step in range(1, 3001):
    time.sleep(0.001)
    bar.update(step, f"loss {1 / step:.4f}")
bar.close()
"""
TRAIN_CELL = """\
import torch
from hone.config import load_config
from hone.engine import Trainer

threads = torch.get_num_threads()
overrides = ["train.max_steps=400", "log.every=1", "log.tensorboard=false", "log.stats_every=0"]
trainer = Trainer(config=load_config("mlp-digits", overrides), run_dir="run")
summary = trainer.fit()
(summary["steps"], torch.get_num_threads() == threads)
"""


def test_a_notebook_shows_one_bar_updated_in_place(tmp_path) -> None:
    nbformat = pytest.importorskip("nbformat")
    from tests.notebooks import execute, text_of

    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(BAR_CELL), nbformat.v4.new_code_cell(TRAIN_CELL)]
    )
    client = execute(nb, tmp_path, tmp_path / "jupyter")
    bar, train = nb.cells
    # The bar alone: one display, replaced in place about once a second, not once a step.
    assert [o["output_type"] for o in bar.outputs] == ["display_data"]
    assert "step 3000/3000" in text_of(bar.outputs)
    assert client.messages[0]["update_display_data"] <= redraws(bar) < 20
    # A run that logs every step: its bar and its result, nothing printed beside them.
    kinds = [o["output_type"] for o in train.outputs]
    assert kinds == ["display_data", "execute_result"], text_of(train.outputs)
    assert "step 400/400" in text_of(train.outputs)
    assert text_of(train.outputs[1:]) == "(400, True)"
    assert client.messages[1]["update_display_data"] <= redraws(train) < 100


def redraws(cell) -> float:
    """The most in-place updates a cell may send: one a refresh interval while it ran, and the
    last state at the end."""
    timing = cell.metadata["execution"]
    busy, idle = (datetime.fromisoformat(timing[f"iopub.status.{k}"]) for k in ("busy", "idle"))
    return (idle - busy).total_seconds() / NOTEBOOK_REFRESH_SECONDS + 1
