"""The engine's shape: modules small enough to read in one sitting, run file names in one
module (hone.run_files), nothing importing upward."""

from __future__ import annotations

import re
from pathlib import Path

import hone

PACKAGE = Path(hone.__file__).parent


def test_engine_modules_stay_under_their_line_budget() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "engine").glob("*.py")}
    assert sizes["trainer.py"] < 400, sizes
    assert max(sizes.values()) <= 400, sizes


def test_run_file_names_live_in_run_files_only() -> None:
    names = (
        "config.toml",
        "metrics.jsonl",
        "summary.json",
        "data.json",
        "converters.json",
        "model.onnx",
        "compress.json",
        "model-int8.onnx",
        "model-int8.safetensors",
    )
    pattern = re.compile("|".join(rf'"{re.escape(n)}"' for n in names))
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name != "run_files.py" and pattern.search(p.read_text())
    ]
    assert offenders == []


def test_building_blocks_do_not_import_the_engine_or_above() -> None:
    upward = re.compile(
        r"^\s*(from|import) hone\.(engine|tune|export|compress|cli)\b", re.MULTILINE
    )
    for package in ("config", "data", "models", "optim", "track", "checkpoint", "distributed"):
        for path in (PACKAGE / package).rglob("*.py"):
            assert not upward.search(path.read_text()), path
