"""hone.run_records: the one reader of a run's files, on hand-written records (the commands
that use it, `hone runs`, `hone doctor`, `hone report`, are tested on real runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hone.run_files import RunFiles
from hone.run_records import as_number, number, read_events, read_statistics, task_metric
from hone.run_records.reader import read_lines


def _jsonl(path: Path, records: list[dict[str, object]], cut: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + cut)


def test_logged_numbers_decode_once_nan_and_inf_from_their_strings() -> None:
    assert [as_number(v) for v in (3, 0.5, "1e-3", None, True, "relu", [1])] == [
        3.0, 0.5, 1e-3, None, None, None, None,
    ]  # fmt: skip
    assert math.isnan(number("nan")) and number("-inf") == -math.inf and math.isnan(number(None))


def test_events_keep_the_last_record_of_a_step_and_every_fault(tmp_path: Path) -> None:
    files = RunFiles(tmp_path)
    _jsonl(
        files.metrics,
        [
            {"step": 1, "split": "train", "loss": 2.0},
            {"step": 2, "split": "train", "loss": "nan"},
            {"step": 2, "split": "fault", "event": "skipped_step"},
            {"step": 2, "split": "fault", "event": "skipped_step"},
            {"step": 2, "split": "train", "loss": 1.5},  # after a rollback redid step 2
            {"step": 2, "split": "val", "loss": 1.6, "accuracy": 0.5},
        ],
        cut='{"step": 3, "spl',  # the writer was killed mid-line
    )
    events = read_events(files)
    assert [e["loss"] for e in events["train"]] == [2.0, 1.5]
    assert len(events["fault"]) == 2 and len(events["val"]) == 1
    last_line = len(json.dumps({"step": 2, "split": "val", "loss": 1.6, "accuracy": 0.5})) + 1
    tail = read_lines(files.metrics, tail_bytes=last_line + 20)  # a cut line before it, too
    assert [e["split"] for e in tail] == ["val"]


def test_statistics_by_kind_one_layers_record_per_step(tmp_path: Path) -> None:
    files = RunFiles(tmp_path)
    _jsonl(
        files.stats,
        [
            {"step": 0, "kind": "run", "initial_loss": 2.3},
            {"step": 1, "kind": "layers", "layers": [], "grad_norm": 1.0},
            {"step": 1, "kind": "layers", "layers": [], "grad_norm": 2.0},
            {"step": 1, "kind": "non_finite", "tensor": "fc1.weight"},
        ],
    )
    stats = read_statistics(files)
    assert stats.run["initial_loss"] == 2.3 and len(stats.non_finite) == 1
    assert [r["grad_norm"] for r in stats.layers] == [2.0]


def test_the_task_metric_comes_from_the_summary_the_status_file_then_the_events() -> None:
    val = [{"step": 5, "split": "val", "loss": 1.0, "f1": 0.3, "accuracy": 0.8}]
    summary = {"metric": "f1", "metric_directions": {"f1": "max"}}
    assert task_metric(summary, {"metric": "accuracy"}, val) == ("f1", "max")
    assert task_metric(None, {"metric": "perplexity"}, val) == ("perplexity", "min")
    assert task_metric(None, None, val) == ("accuracy", "max")  # a built-in one first
    assert task_metric(None, None, [{"step": 5, "split": "val", "loss": 1.0, "f1": 0.3}]) == (
        "f1",
        "",
    )
