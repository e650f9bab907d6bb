"""The progress bar and the summary table write to stderr, and a reader of stderr that leaves
(`hone train 2>&1 | head -1`) ends neither them nor the run."""

from __future__ import annotations

import os
import sys

import pytest

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
