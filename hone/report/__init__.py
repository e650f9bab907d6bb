"""`hone report`: one self-contained HTML page of plots for a run, several runs overlaid, or a
tuning study.

from hone.report import write_report
path = write_report(["runs/mlp-digits-20250101T000000Z"])  # -> that run's report.html

The page inlines Plotly's JavaScript, so it opens anywhere with no network; a live run is
reported as its files stand.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hone.errors import ConfigError
from hone.report.data import RunData
from hone.report.page import Page
from hone.report.run_page import run_page
from hone.report.study import is_study, study_page
from hone.run_files import REPORT, STUDY_DB, RunFiles
from hone.runs import is_run

__all__ = ["RunData", "build_page", "default_output", "write_report"]


def default_output(targets: Sequence[str | Path]) -> Path:
    """One run or study: report.html inside it; several runs: report.html here."""
    if len(targets) == 1:
        return RunFiles(targets[0]).report
    return Path(REPORT)


def build_page(targets: Sequence[str | Path], study: str = "") -> Page:
    """The page for run directories, or for one tuning directory."""
    if not targets:
        raise ConfigError("hone report needs a run directory or a tuning directory")
    paths = [Path(t) for t in targets]
    studies = [p for p in paths if is_study(p)]
    if studies:
        if len(paths) > 1:
            raise ConfigError(
                f"hone report takes one tuning directory at a time, got {len(paths)} paths; "
                f"report {studies[0]} alone"
            )
        return study_page(studies[0], study)
    for path in paths:
        if not is_run(path):
            raise ConfigError(
                f"{path} is not a run directory (no config.toml or summary.json) nor a tuning "
                f"directory (no {STUDY_DB}); `hone runs` lists the runs under a folder"
            )
    return run_page([RunData.read(p) for p in _folds_of(paths)])


def _folds_of(paths: list[Path]) -> list[Path]:
    """Run directories, a k-fold run replaced by its folds (its own folder logs no steps)."""
    out = []
    for path in paths:
        files = RunFiles(path)
        folds = sorted(path.glob("fold-*"), key=lambda p: (len(p.name), p.name))  # 2 < 10
        out += folds if files.cv.is_file() and folds else [path]
    return out


def write_report(
    targets: Sequence[str | Path], output: str | Path | None = None, study: str = ""
) -> Path:
    """Write the report of `targets` to `output` (default: `default_output`); its path."""
    page = build_page(targets, study)
    return page.write(Path(output) if output else default_output(targets))
