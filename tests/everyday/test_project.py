"""Every command on a user's own model and data modules, through the `hone` console script:
modules in the working directory and beside the config, runs used from another folder."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import forking
from tests.everyday.conftest import check, hone, start


def test_train_finds_modules_in_the_working_directory_and_beside_the_config(
    project: Path, trained: tuple[Path, str]
) -> None:
    run, stdout = trained
    assert "run directory: runs/classify" in stdout
    record = json.loads((run / "imports.json").read_text())
    # mydata.py came from the working directory, mymodels.py from the config's folder
    assert record["data.target"]["folder"] == str(project.resolve())
    assert record["model.target"]["folder"] == str((project / "configs").resolve())
    assert record["model.target"]["target"] == "mymodels:build"
    # the run's config is the resolved whole: no base left in it, named after the file
    config = (run / "config.toml").read_text()
    assert "base =" not in config and 'recipe = "classify"' in config


def test_eval_from_another_folder_uses_the_recorded_folders(
    trained: tuple[Path, str], elsewhere: Path
) -> None:
    run, _ = trained
    metrics = json.loads(check(hone("eval", str(run), "--json", cwd=elsewhere)).stdout)
    assert metrics["split"] == "val" and "accuracy" in metrics


def test_a_moved_module_is_one_line_that_says_what_to_add_to_the_path(
    trained: tuple[Path, str], elsewhere: Path
) -> None:
    run, _ = trained
    copy = elsewhere / "moved"
    shutil.copytree(run, copy)
    record = json.loads((copy / "imports.json").read_text())
    gone = elsewhere / "gone"
    for entry in record.values():  # as if the project had been moved away
        entry["file"] = str(gone / Path(entry["file"]).name)
        entry["folder"] = str(gone)
    (copy / "imports.json").write_text(json.dumps(record))
    result = hone("eval", str(copy), cwd=elsewhere)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("hone: error: model.target = 'mymodels:build'")
    assert str(gone / "mymodels.py") in line and "mymodels.py" in line
    assert "PYTHONPATH=" in line


def test_predict(project: Path, trained: tuple[Path, str]) -> None:
    run, _ = trained
    check(hone("predict", str(run), "--input", "new.csv", "--output", "out.csv", cwd=project))
    assert (project / "out.csv").read_text().splitlines()[0].startswith("a,b,c,d,prediction")


@pytest.fixture(scope="session")
def compressed(
    trained: tuple[Path, str], elsewhere: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """`hone compress RUN --prune 0.5` from another folder (the cheapest method: no ONNX
    export, no fine-tuning; a 67-parameter model may lose what it likes); the pruned run."""
    run, _ = trained
    cache = {"HONE_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "hone-cache")}
    args = ("compress", str(run), "--prune", "0.5", "--max-drop", "100")
    check(hone(*args, cwd=elsewhere, env=cache))
    return run.with_name(f"{run.name}-pruned")


def test_compress_keeps_the_record(compressed: Path) -> None:
    assert json.loads((compressed / "imports.json").read_text())["model.target"]["folder"]


@pytest.fixture
def server(compressed: Path, elsewhere: Path) -> Iterator[tuple[forking.Forked, str]]:
    """`hone serve` on the compressed run from another folder, two spawned workers."""
    args = ["serve", str(compressed), "--port", "0", "--workers", "2", "--threads", "1"]
    proc = start(*args, "--grace", "1", "--log-level", "warning", cwd=elsewhere)
    try:
        deadline = time.monotonic() + 120
        while " on http://" not in (said := proc.stderr_text()):
            assert proc.poll() is None and time.monotonic() < deadline, said
            time.sleep(0.05)
        url = next(line for line in said.splitlines() if " on http://" in line)
        yield proc, url.split(" on ", 1)[1].split(" ", 1)[0]
    finally:  # SIGTERM: the server stops its worker processes too
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_serve_from_another_folder(server: tuple[forking.Forked, str]) -> None:
    proc, url = server
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, "hone serve exited"
        try:
            if httpx.get(f"{url}/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "hone serve never became ready"
        time.sleep(0.1)
    for _ in range(4):  # each worker process loads the run (and imports the modules) itself
        answer = httpx.post(f"{url}/v1/predict", json={"inputs": [[0.1, 0.2, 0.3, 0.4]]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0] in (0, 1, 2)


def test_tune_workers_find_the_modules(project: Path) -> None:
    args = ("tune", "configs/classify.toml", "--trials", "2", "--workers", "2", "--dir", "tune")
    out = check(hone(*args, cwd=project)).stdout
    assert "2 complete" in out
    # the file's own [tune.space] replaced mlp-digits' default one
    assert "optim.lr=" in out and "model.width" not in out


def test_nproc_workers_then_sample(project: Path, elsewhere: Path) -> None:
    check(hone("train", "configs/lm.toml", "--nproc", "2", "--run-dir", "runs/lm", cwd=project))
    args = ("sample", str(project / "runs" / "lm"), "--prompt", "the ", "--max-new-tokens", "8")
    assert check(hone(*args, cwd=elsewhere)).stdout.startswith("the ")
