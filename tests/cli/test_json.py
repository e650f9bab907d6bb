"""`--json`: every command that prints a table or metrics prints one JSON document on stdout
and nothing else there. Run in this process (the commands are the same functions as in a
subprocess, and capfd sees every byte written to file descriptor 1, from C code too)."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from hone.checkpoint import TrainingInterrupted
from hone.cli import main
from hone.cli.commands import _stopped
from hone.cli.output import plain
from hone.errors import ExitCode
from tests.cli.conftest import TINY_LINREG


def hone_json(capfd: pytest.CaptureFixture[str], *args: str, code: int = 0) -> Any:
    """Run `hone ARGS --json` here; check the exit code and return the parsed stdout."""
    exit_code = main([*args, "--json"])
    out, err = capfd.readouterr()
    assert exit_code == code, err
    return json.loads(out)  # the whole of stdout, or this fails


def test_recipes_and_config_keys(capfd) -> None:
    recipes = hone_json(capfd, "recipes")
    assert {"linreg", "gpt-shakespeare-char"} <= {r["name"] for r in recipes}
    assert all(r["description"] for r in recipes)
    keys = {k["key"]: k for k in hone_json(capfd, "config", "keys")}
    assert keys["optim.lr"]["help"] and "default" in keys["optim.lr"]


def test_train_prints_its_summary_with_the_run_directory(tmp_path, capfd) -> None:
    run = tmp_path / "run"
    overrides = [f"--{item}" for item in TINY_LINREG]
    summary = hone_json(capfd, "train", "linreg", "--run-dir", str(run), *overrides)
    assert summary["run_dir"] == str(run) and summary["steps"] == 5
    assert summary["recipe"] == "linreg" and "sample" in summary
    assert (
        summary["best_val_loss"] == json.loads((run / "summary.json").read_text())["best_val_loss"]
    )


def test_eval_and_doctor(linreg_run: Path, capfd) -> None:
    metrics = hone_json(capfd, "eval", str(linreg_run), "--split", "test")
    assert metrics["split"] == "test" and {"loss", "r2"} <= set(metrics)
    report = hone_json(capfd, "doctor", str(linreg_run))
    assert report["healthy"] is True and report["findings"] == []


def test_lr_find(tmp_path, capfd) -> None:
    result = hone_json(
        capfd, "lr-find", "linreg", "--num-steps", "20", "--output", str(tmp_path / "lr")
    )
    assert result["suggestion"] > 0 and result["train_command"].startswith("hone train linreg")
    assert Path(result["json_path"]).is_file() and Path(result["plot_path"]).is_file()


def test_tune_and_tune_show(study: Path, capfd) -> None:
    config = study.parent / "tune.toml"
    # The study's two trials are done: this run only reports them.
    result = hone_json(capfd, "tune", str(config), "--trials", "2", "--dir", str(study))
    assert result["counts"]["complete"] == 2 and result["metrics"] == ["val_loss"]
    assert len(result["best"]) == 1 and Path(result["best_config"]).is_file()
    shown = hone_json(capfd, "tune", "show", "linreg", "--dir", str(study))
    assert shown["study"] == "linreg" and shown["directions"] == ["minimize"]
    values = [t["values"][0] for t in shown["trials"]]
    assert len(values) == 2 and values == sorted(values)  # best first
    assert shown["trials"][0]["number"] == result["best"][0]["number"]


def test_export_onnx_and_safetensors(linreg_run: Path, tmp_path, capfd) -> None:
    onnx = hone_json(
        capfd, "export", str(linreg_run), "--format", "onnx", "--output", str(tmp_path / "m.onnx")
    )
    assert onnx["path"] == str(tmp_path / "m.onnx") and onnx["checks"]
    assert onnx["max_abs_diff"] <= onnx["tolerance"]
    bundle = hone_json(
        capfd, "export", str(linreg_run), "--format", "safetensors", "--output", str(tmp_path / "b")
    )
    assert bundle == {"format": "safetensors", "path": str(tmp_path / "b")}


def test_compress_and_its_failed_gate(linreg_run: Path, tmp_path, capfd) -> None:
    args = ["compress", str(linreg_run), "--prune", "0.5", "--repeats", "1"]
    out = tmp_path / "pruned"
    table = hone_json(capfd, *args, "--max-drop", "1e9", "--output", str(out))
    assert table["output"] == str(out) and table["gate"]["passed"]
    assert json.loads((out / "compress.json").read_text())["gate"] == table["gate"]
    # A gate no model passes: the comparison still comes as JSON, and nothing is written.
    failed = hone_json(
        capfd, *args, "--max-drop=-1e9", "--output", str(tmp_path / "no"), code=ExitCode.FAILED
    )
    assert failed["output"] is None and not failed["gate"]["passed"]
    assert not (tmp_path / "no").exists()


def test_plain_writes_strict_json() -> None:
    data = {"loss": float("nan"), "best": [float("inf"), 1.5], "run": Path("runs/x")}
    assert plain(data) == {"loss": None, "best": [None, 1.5], "run": "runs/x"}


def test_a_run_a_signal_stopped_says_so_in_json(tmp_path, capsys) -> None:
    """SIGTERM's exit code is 0: the JSON tells a script that the run only stopped."""
    stop = TrainingInterrupted(signal.SIGTERM, 7, str(tmp_path / "checkpoints" / "step-7"))
    assert _stopped(argparse.Namespace(json=True), stop, tmp_path) == ExitCode.OK
    stopped = json.loads(capsys.readouterr().out)["stopped"]
    assert stopped == {"signal": "SIGTERM", "step": 7, "checkpoint": stop.checkpoint}


def test_json_with_several_processes_is_refused(capfd) -> None:
    assert main(["train", "linreg", "--nproc", "2", "--json"]) == ExitCode.USER_ERROR
    out, err = capfd.readouterr()
    assert out == "" and "summary.json" in err
