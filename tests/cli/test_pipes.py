"""`hone X | head -1`: every printing command ends quietly when its reader leaves early, with
exit code 141 (README.md's table), and no traceback or "Exception ignored" on stderr.

Each case is a fresh interpreter (the final flush at its exit is part of what is tested),
which spends seconds importing torch on one core: a module fixture runs them all, as many
at a time as there are cores, and each test checks its own.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hone.errors import ExitCode
from tests.cli.conftest import TINY_LINREG
from tests.conftest import ROOT


def closed_early(*args: str, lines: int = 0, tmp_path: Path) -> tuple[int, list[str], str]:
    """Run `hone ARGS` with a reader on stdout that reads `lines` lines and then closes the
    pipe; return the exit code, the lines read and stderr.

    With lines=0 the reader is gone before hone writes anything, so its first write to stdout
    fails for certain. With more, whether any write fails depends on how much hone still had
    to write when the reader left.
    """
    # Unbuffered output (PYTHONUNBUFFERED) would hide the case where text waits in stdout's
    # buffer until the interpreter's final flush, as it does in a user's shell.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = str(ROOT)
    with open(tmp_path / "stderr.txt", "w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hone", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        read = [proc.stdout.readline() for _ in range(lines)]
        proc.stdout.close()
        code = proc.wait(timeout=300)
        stderr.seek(0)
        return code, read, stderr.read()


def assert_quiet(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
    assert "BrokenPipeError" not in stderr, stderr


def _predict_args(run: Path, tmp_path: Path) -> list[str]:
    features = json.loads((run / "data.json").read_text())["feature_names"]
    src = tmp_path / "in.csv"
    with open(src, "w", newline="") as f:
        csv.writer(f).writerows([features, [0.0] * len(features)])
    return ["predict", str(run), "--input", str(src), "--output", str(tmp_path / "out.csv")]


# Each printing command, in its human form (tables, rich output), as the fixtures allow.
COMMANDS: dict[str, Callable[[pytest.FixtureRequest, Path], list[str]]] = {
    "recipes": lambda request, tmp: ["recipes"],
    "config show": lambda request, tmp: ["config", "show", "linreg"],
    "config keys": lambda request, tmp: ["config", "keys"],
    "train": lambda request, tmp: [
        "train", "linreg", "--run-dir", str(tmp / "run"), *(f"--{o}" for o in TINY_LINREG)
    ],
    "eval": lambda request, tmp: ["eval", str(request.getfixturevalue("linreg_run"))],
    "predict": lambda request, tmp: _predict_args(request.getfixturevalue("linreg_run"), tmp),
    "sample": lambda request, tmp: [
        "sample", str(request.getfixturevalue("gpt_run")), "--max-new-tokens", "5"
    ],
    "doctor": lambda request, tmp: ["doctor", str(request.getfixturevalue("linreg_run"))],
    "lr-find": lambda request, tmp: [
        "lr-find", "linreg", "--num-steps", "20", "--output", str(tmp / "lr")
    ],
    # Run again with the study's trials all done: it only reports.
    "tune": lambda request, tmp: [
        "tune", str(request.getfixturevalue("study").parent / "tune.toml"),
        "--trials", "2", "--dir", str(request.getfixturevalue("study")),
    ],
    "tune show": lambda request, tmp: [
        "tune", "show", "linreg", "--dir", str(request.getfixturevalue("study"))
    ],
    "export": lambda request, tmp: [
        "export", str(request.getfixturevalue("linreg_run")), "--format", "safetensors",
        "--output", str(tmp / "bundle"),
    ],
    "compress": lambda request, tmp: [
        "compress", str(request.getfixturevalue("linreg_run")), "--prune", "0.5",
        "--repeats", "1", "--max-drop", "1e9", "--output", str(tmp / "pruned"),
    ],
}  # fmt: skip


HEAD_1 = {"recipes": ["recipes"], "--help": ["--help"]}
Outcome = tuple[int, list[str], str]  # exit code, lines read, stderr


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Outcome]:
    """{case: outcome} of every case below, each in a folder of its own."""
    cases: dict[str, tuple[list[str], int, Path]] = {}  # {case: (args, lines, folder)}
    for name, make in COMMANDS.items():
        folder = tmp_path_factory.mktemp("pipes")
        cases[name] = (make(request, folder), 0, folder)  # the session fixtures made here
    for name, args in HEAD_1.items():
        cases[f"head -1: {name}"] = (args, 1, tmp_path_factory.mktemp("pipes"))
    folder = tmp_path_factory.mktemp("pipes")
    cases["user error"] = (["doctor", str(folder / "nowhere")], 0, folder)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        futures = {
            name: pool.submit(closed_early, *args, lines=lines, tmp_path=folder)
            for name, (args, lines, folder) in cases.items()
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", COMMANDS)
def test_a_reader_gone_before_the_output_is_exit_141_and_no_traceback(
    name: str, outcomes: dict[str, Outcome]
) -> None:
    code, _, stderr = outcomes[name]
    assert_quiet(stderr)
    assert code == ExitCode.BROKEN_PIPE, stderr


@pytest.mark.parametrize("name", HEAD_1)
def test_head_1_reads_the_first_line_and_hone_ends_quietly(
    name: str, outcomes: dict[str, Outcome]
) -> None:
    """The issue's `hone recipes | head -1`: the line arrives; if hone was still writing when
    the reader left it exits 141, if it had written everything, 0."""
    code, read, stderr = outcomes[f"head -1: {name}"]
    assert read[0].strip()
    assert_quiet(stderr)
    assert code in (ExitCode.OK, ExitCode.BROKEN_PIPE), stderr


def test_a_closed_pipe_after_a_user_error_keeps_quiet(outcomes: dict[str, Outcome]) -> None:
    code, _, stderr = outcomes["user error"]
    assert code == ExitCode.USER_ERROR  # nothing went to stdout: the error's code stands
    assert stderr.startswith("hone: error: ") and len(stderr.splitlines()) == 1
