"""docs/python.md: the line counts in its table are those of the code it shows, every snippet
compiles, and hone's runs as shown."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests import forking

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"
SECTIONS = {"hone": "hone", "PyTorch Lightning": "PyTorch Lightning", "Keras": "Keras 3"}


def snippets() -> dict[str, str]:
    """The first python block under each `### <name>` heading."""
    text = DOC.read_text()
    found = {}
    for heading in SECTIONS:
        match = re.search(rf"^### {re.escape(heading)}\n.*?```python\n(.*?)```", text, re.M | re.S)
        assert match, f"no code under ### {heading}"
        found[heading] = match.group(1)
    return found


def lines_of_code(code: str) -> int:
    """Non-blank lines that are not only a comment."""
    return sum(1 for line in code.splitlines() if line.strip() and not line.strip().startswith("#"))


def test_the_table_counts_the_lines_shown() -> None:
    text = DOC.read_text()
    for heading, code in snippets().items():
        compile(code, heading, "exec")
        row = re.search(rf"^\| {re.escape(SECTIONS[heading])}[^|]* \| (\d+) \|", text, re.M)
        assert row, f"no table row for {SECTIONS[heading]}"
        assert int(row.group(1)) == lines_of_code(code), heading


def test_the_hone_snippet_trains(tmp_path) -> None:
    """As a script of its own: a fork of a server that imported torch (tests/forking.py)."""
    (tmp_path / "snippet.py").write_text(snippets()["hone"])
    logs = tmp_path.parent / f"{tmp_path.name}-logs"  # outside: the snippet's folder holds runs/
    done = forking.run([], tmp_path, dict(os.environ), logs, timeout=300, script="snippet.py")
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) > 0.9  # best validation accuracy
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "summary.json").is_file() and (run / "metrics.jsonl").is_file()
