"""`hone --version` and the help that points to `hone config keys` with real examples."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import hone
from tests.everyday.conftest import hone as run_hone


def test_version_names_hone_torch_and_python(tmp_path: Path) -> None:
    result = run_hone("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(f"hone {hone.__version__}")
    assert f"torch {version('torch')}" in line and f"Python {platform.python_version()}" in line


def test_help_points_to_config_keys_with_examples(tmp_path: Path) -> None:
    for args in (("--help",), ("train", "--help")):
        text = run_hone(*args, cwd=tmp_path).stdout
        assert "hone config keys" in text, args
        examples = re.findall(r"^  hone (?:train|tune) \S+", text, re.MULTILINE)
        assert len(examples) >= 2, text


def test_version_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom hone.cli import main\ntry:\n    main(['--version'])\n"
        "except SystemExit:\n    pass\nassert 'torch' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
