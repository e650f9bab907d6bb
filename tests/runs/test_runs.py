"""`hone runs`: finding runs under a folder, --where, --sort, compare, and the CLI around
them, on run directories written here by hand (the format the trainer writes: summary.json,
status.json, config.toml; test_status.py makes real ones)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import tomli_w

import hone
from hone.cli import main
from hone.errors import ConfigError
from hone.run_files import RunFiles
from hone.run_records.status import this_process
from hone.runs import compare_runs, list_runs, read_run, sort_runs, where

ROOT = Path(__file__).resolve().parents[2]


def make_run(
    folder: Path,
    summary: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    files = RunFiles(folder)
    folder.mkdir(parents=True)
    recipe = (summary or {}).get("recipe", "mlp-digits")
    files.config.write_text(tomli_w.dumps(config or {"recipe": recipe, "optim": {"lr": 0.003}}))
    if status is not None:
        files.status.write_text(json.dumps(status))
    if summary is not None:
        time.sleep(0.01)  # a summary written after the status file (mtime order matters)
        files.summary.write_text(json.dumps(summary))
    return folder


def finished(recipe: str, best: float, loss: float, metric: str = "accuracy", **more: Any):
    return {
        "recipe": recipe,
        "steps": 100,
        "wall_seconds": 10.0,
        "stop_reason": "max_steps",
        "best_val_loss": loss,
        "best_val_metric": best,
        "metric": metric,
        **more,
    }


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three finished runs of two recipes, a trial of a study, a k-fold run, a live run."""
    make_run(tmp_path / "a", finished("mlp-digits", 0.90, 0.40))
    make_run(
        tmp_path / "b",
        finished("mlp-digits", 0.95, 0.30, test_accuracy=0.94),
        config={"recipe": "mlp-digits", "optim": {"lr": 0.01}, "model": {"width": 64}},
    )
    make_run(tmp_path / "c", finished("gpt-shakespeare-char", 5.2, 1.65, "perplexity"))
    make_run(tmp_path / "study" / "trials" / "trial-0", finished("linreg", 0.99, 0.01, "r2"))
    cv = make_run(tmp_path / "kfold", config={"recipe": "mlp-digits"})
    RunFiles(cv).cv.write_text(json.dumps({"recipe": "mlp-digits", "best_val_loss_mean": 0.5}))
    make_run(cv / "fold-0", finished("mlp-digits", 0.9, 0.5))  # inside a run: not listed
    now = time.time()
    live = {"state": "running", **this_process(), "started": now, "heartbeat": now, "step": 7}
    make_run(tmp_path / "live", status={**live, "total_steps": 50, "recipe": "mlp-digits"})
    return tmp_path


def test_runs_are_found_under_a_folder_and_read_from_small_files(folder: Path) -> None:
    runs = {r.name: r for r in list_runs([folder])}
    assert sorted(runs) == ["a", "b", "c", "kfold", "live", "study/trials/trial-0"]
    assert runs["b"].best == 0.95 and runs["b"].steps_per_second == 10.0
    assert runs["live"].status.label == "running" and (
        runs["live"].steps,
        runs["live"].total_steps,
    ) == (7, 50)
    assert runs["kfold"].status.label == "finished" and runs["kfold"].best_val_loss == 0.5
    assert runs["c"].recipe == "gpt-shakespeare-char" and runs["a"].started is not None


def test_where_filters_by_columns_summary_and_config_keys(folder: Path) -> None:
    runs = list_runs([folder])

    def names(*conditions: str) -> list[str]:
        return sorted(r.name for r in where(runs, conditions))

    assert names("recipe=mlp-digits") == ["a", "b", "kfold", "live"]
    assert names("best_val_loss<1.6") == ["a", "b", "kfold", "study/trials/trial-0"]
    assert names("recipe=mlp-digits", "best_val_loss<0.45") == ["a", "b"]
    assert names("optim.lr>=0.01") == ["b"]  # read from config.toml
    assert names("test_accuracy>0.9") == ["b"]
    assert names("name=study/*") == ["study/trials/trial-0"]
    assert names("status=running") == ["live"] and names("recipe~GPT") == ["c"]
    assert names("recipe!=mlp-digits") == ["c", "study/trials/trial-0"]
    with pytest.raises(
        ConfigError, match=r"no run has 'best_val_los'.*did you mean 'best_val_loss'"
    ):
        where(runs, ["best_val_los<1"])
    with pytest.raises(ConfigError, match="KEY OP VALUE"):
        where(runs, ["recipe"])


def test_sort_puts_the_best_first_by_each_metric_s_direction(folder: Path) -> None:
    runs = list_runs([folder])
    digits = where(runs, ["metric=accuracy"])
    assert [r.name for r in sort_runs(digits, "best")] == ["b", "a"]  # accuracy: higher first
    lm = where(runs, ["metric=perplexity"]) + digits
    assert sort_runs(lm, "best")[0].name in ("b", "c")
    ordered = [r.name for r in sort_runs(runs, "best_val_loss")]
    assert ordered[0] == "study/trials/trial-0" and ordered[-1] == "live"  # no value: last
    assert [r.name for r in sort_runs(runs, "best_val_loss", reverse=True)][-1] == "live"
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        sort_runs(runs, "stepz")


def test_a_summary_newer_than_a_running_status_means_the_run_ended(tmp_path: Path) -> None:
    """A pruned trial: the tuner writes its summary after the trainer stopped writing."""
    now = time.time()
    running = {"state": "running", **this_process(), "started": now, "heartbeat": now}
    pruned = make_run(
        tmp_path / "pruned", finished("linreg", 0.5, 0.5, stop_reason="pruned"), running
    )
    assert read_run(pruned).status.label == "pruned"
    far = {**running, "host": socket.gethostname() + "-elsewhere", "heartbeat": now - 3600}
    assert read_run(make_run(tmp_path / "lost", status=far)).status.label == "killed"
    near = {**far, "heartbeat": now - 5}
    assert read_run(make_run(tmp_path / "far", status=near)).status.label == "running"
    old = make_run(tmp_path / "old")  # no status file: from before them, never finished
    assert read_run(old).status.label == "incomplete"


def test_compare_shows_only_the_differing_config_keys(folder: Path, capsys) -> None:
    result = compare_runs([folder / "a", folder / "b"])
    assert result.config == {"model.width": [None, 64], "optim.lr": [0.003, 0.01]}
    assert result.metrics["best_val_accuracy"] == [0.90, 0.95]
    assert result.metrics["status"] == ["finished", "finished"]
    assert main(["runs", "compare", str(folder / "a"), str(folder / "b")]) == 0
    out = capsys.readouterr().out
    assert "optim.lr" in out and "0.003" in out and "recipe " not in out
    assert main(["runs", "compare", str(folder / "a"), str(folder / "b"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config_differences"]["optim.lr"] == [0.003, 0.01]
    assert main(["runs", "compare", str(folder / "a")]) == 2
    assert "at least two runs" in capsys.readouterr().err


def test_the_cli_table_json_and_errors(folder: Path, capsys) -> None:
    assert main(["runs", str(folder), "--sort", "best_val_loss"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"live .* running .* 7/50", out) and "accuracy 0.95" in out
    assert main(["runs", str(folder), "--json", "--where", "recipe=linreg"]) == 0
    rows = json.loads(capsys.readouterr().out)  # only JSON on stdout
    assert [r["name"] for r in rows] == ["study/trials/trial-0"] and rows[0]["state"] == "finished"
    assert main(["runs", str(folder / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_listing_needs_neither_torch_nor_the_engine(folder: Path) -> None:
    code = (
        "import sys; from hone.cli import main; main(['runs', sys.argv[1], '--json']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    upward = re.compile(
        r"^\s*(from|import) hone\.(engine|tune|export|compress|doctor|report|cli)\b", re.M
    )
    for path in (Path(hone.__file__).parent / "runs").glob("*.py"):
        assert not upward.search(path.read_text()), path
