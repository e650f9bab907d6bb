"""`hone report`: the page of a run, of runs overlaid, of a live run and of a tuning study.
The pages are checked as HTML here, then opened in headless Chromium with the network
blocked: every plot drawn with data, no JavaScript error, nothing fetched, a screenshot kept.

Screenshots land in the test's temp folder and, when HONE_TEST_ARTIFACTS names a folder,
there too; their paths are printed (pytest -s, or -rP, shows them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from hone.cli import main
from hone.doctor import diagnose
from hone.report import write_report
from hone.run_files import REPORT

# Plots every page of that kind must have (more may come with what a run logged).
EXPECTED = {
    "digits": {"loss-steps", "loss-time", "val-accuracy", "train-lr", "stat-grad_norm",
               "stat-update_ratio", "layers-grad_norm", "train-samples_per_second"},
    "gpt": {"loss-steps", "val-perplexity", "train-tokens_per_second", "train-mfu", "train-lr"},
    "overlay": {"loss-steps", "loss-time", "val-accuracy", "stat-grad_norm"},
    "live": {"loss-steps", "val-accuracy", "train-lr"},
    "study": {"study-optimization_history", "study-param_importances",
              "study-parallel_coordinate", "study-slice", "study-timeline", "study-best-curves"},
}  # fmt: skip


@pytest.fixture(scope="module")
def pages(runs, live, tmp_path_factory) -> dict[str, Path]:
    """Every kind of page, written once."""
    out = tmp_path_factory.mktemp("report-pages")
    return {
        "digits": write_report([runs["digits"]]),
        "gpt": write_report([runs["gpt"]], out / "gpt.html"),
        "overlay": write_report([runs["digits"], runs["hot"]], out / "overlay.html"),
        "live": write_report([live], out / "live.html"),
        "study": write_report([runs["study"]]),
    }


def slugs(page: Path) -> list[str]:
    return re.findall(r'<section class="plot" data-plot="([^"]+)"', page.read_text())


def test_each_page_is_one_file_with_its_plots_and_no_outside_resource(pages, runs) -> None:
    assert pages["digits"] == runs["digits"] / REPORT  # default: inside the run
    assert pages["study"] == runs["study"] / REPORT
    for kind, page in pages.items():
        text = page.read_text()
        assert EXPECTED[kind] <= set(slugs(page)), (kind, slugs(page))
        assert not re.search(r"<(script|link|img)[^>]+(src|href)=", text), kind
        assert "Plotly.newPlot" in text and len(text) > 3_000_000  # plotly.js inlined


def test_a_run_page_says_what_a_person_needs_first(pages, runs) -> None:
    digits, gpt = pages["digits"].read_text(), pages["gpt"].read_text()
    for label in ("status", "best val accuracy", "test accuracy", "training time", "parameters"):
        assert label in digits, label
    assert "What the doctor found" in digits and "config.toml" in digits
    assert "Sample" in gpt and "tok/s" in gpt and "Test metrics" in digits
    overlay = pages["overlay"].read_text()
    assert "Config differences" in overlay and "optim.lr" in overlay and "0.5" in overlay
    found = [f["id"] for f in diagnose(runs["hot"])["findings"]]  # lr 0.5: units die
    assert found and all(finding in overlay for finding in found)
    assert re.search(r"live is training \(step 20 / \d+", pages["live"].read_text())
    study = pages["study"].read_text()
    assert "Leaderboard" in study and "optim.weight_decay" in study and "best.toml" in study


def test_the_command_writes_where_it_is_told(runs, tmp_path, capsys) -> None:
    target = tmp_path / "sub" / "r.html"
    assert main(["report", str(runs["digits"]), "--output", str(target), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"report": str(target.resolve())}
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_every_plot_renders_with_data_in_a_browser(pages, browser, tmp_path) -> None:
    shots = Path(os.environ.get("HONE_TEST_ARTIFACTS") or tmp_path)
    problems = []
    for kind, page in pages.items():
        screenshot = tmp_path / f"report-{kind}.png"
        seen = browser.open(page, screenshot)
        if shots != tmp_path:
            shots.mkdir(parents=True, exist_ok=True)
            shutil.copy(screenshot, shots / screenshot.name)
        print(f"screenshot of the {kind} page: {shots / screenshot.name}")
        assert seen["plotly"] == "object" and seen["title"].startswith("hone report")
        drawn = {p["slug"] for p in seen["plots"]}
        assert drawn == set(slugs(page)) and EXPECTED[kind] <= drawn
        for plot in seen["plots"]:
            if not (plot["traces"] and plot["points"] and plot["marks"] and plot["height"] > 100):
                problems.append((kind, plot))
        problems += [(kind, error) for error in seen["errors"]]
        problems += [(kind, f"fetched {url}") for url in seen["requests"]]
    assert problems == []
