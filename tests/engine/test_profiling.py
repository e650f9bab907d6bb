"""--profile: a window of steps after warm-up writes a trace, an operator table and the
step-time shares; a run without it writes none of them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hone.config import load_config
from hone.engine import Observer, Trainer
from hone.engine.profiling import PHASES, fit_window
from hone.run_files import RunFiles

TINY = ["model.depth=1", "model.width=16", "log.progress=off"]


def config(*overrides: str):
    return load_config("mlp-digits", [*TINY, *overrides])


def profile_files(files: RunFiles) -> list[Any]:
    return [
        files.profile,
        files.profile_table,
        files.profile_trace,
        files.tensorboard_profile_trace,
    ]


def check_shares(report: dict[str, Any]) -> None:
    shares = report["shares"]
    assert set(shares) == set(PHASES)
    assert all(share >= 0 for share in shares.values())
    assert sum(shares.values()) == pytest.approx(1, abs=1e-6)


class StopAt(Observer):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, loss) -> None:
        if trainer.state.step == self.step:
            trainer.request_stop("test")


@pytest.mark.parametrize(
    ("remaining", "window"),
    [
        (0, (5, 2, 5)),
        (100, (5, 2, 5)),
        (12, (5, 2, 5)),
        (9, (2, 2, 5)),
        (4, (0, 1, 3)),
        (1, (0, 0, 1)),
    ],
)
def test_the_window_is_shortened_to_fit_the_run(remaining: int, window: tuple[int, ...]) -> None:
    assert fit_window(remaining, 5, 2, 5) == window


def test_a_profiled_run_writes_trace_table_and_shares(tmp_path) -> None:
    files = RunFiles(tmp_path / "run")
    Trainer(config=config("train.max_steps=20", "train.profile=true"), run_dir=files.root).fit()
    report = json.loads(files.profile.read_text())
    assert report["steps"] == [8, 9, 10, 11, 12]  # wait 5, warm up 2, record 5
    check_shares(report)
    assert report["step_seconds"] > 0
    names = [op["name"] for op in report["top_ops"]]
    assert any(name.startswith("aten::") for name in names), names
    assert all(op["count"] >= 1 and op["self_cpu_seconds"] >= 0 for op in report["top_ops"])
    trace = json.loads(files.profile_trace.read_text())
    assert trace["traceEvents"]
    assert any(event.get("name") == "hone: data" for event in trace["traceEvents"])
    assert json.loads(files.tensorboard_profile_trace.read_text())["traceEvents"]
    assert "Self CPU" in files.profile_table.read_text()


def test_a_run_without_profile_writes_no_profile(tmp_path) -> None:
    files = RunFiles(tmp_path / "run")
    Trainer(config=config("train.max_steps=3"), run_dir=files.root).fit()
    assert files.summary.exists()
    assert not any(path.exists() for path in profile_files(files))


def test_a_run_stopped_inside_the_window_writes_what_it_recorded(tmp_path) -> None:
    # Accumulated micro-batches: forward and backward alternate within a step.
    files = RunFiles(tmp_path / "run")
    cfg = config("train.max_steps=20", "train.profile=true", "train.grad_accum=2")
    Trainer(config=cfg, run_dir=files.root, observers=[StopAt(9)]).fit()
    report = json.loads(files.profile.read_text())
    assert report["steps"] == [8, 9]
    check_shares(report)
    assert report["shares"]["forward"] > 0 and report["shares"]["backward"] > 0


def test_a_run_ending_before_the_window_says_so(tmp_path) -> None:
    files = RunFiles(tmp_path / "run")
    cfg = config("train.max_steps=20", "train.profile=true")
    with pytest.warns(UserWarning, match="ended before the profiling window"):
        Trainer(config=cfg, run_dir=files.root, observers=[StopAt(2)]).fit()
    assert not any(path.exists() for path in profile_files(files))


def test_lbfgs_steps_are_profiled_as_optimizer_time(tmp_path) -> None:
    # The closure's forward and backward passes run inside optimizer.step.
    files = RunFiles(tmp_path / "run")
    cfg = config(
        "optim.name=lbfgs", "optim.lr=1", "optim.weight_decay=0", "optim.max_iter=3",
        "train.max_steps=2", "train.profile=true",
    )  # fmt: skip
    Trainer(config=cfg, run_dir=files.root).fit()
    report = json.loads(files.profile.read_text())
    assert report["steps"] == [2] and report["window"] == {"wait": 0, "warmup": 1, "active": 1}
    check_shares(report)
    assert report["shares"]["optimizer"] > report["shares"]["forward"]


def test_cli_profile_flag_prints_the_shares(tmp_path, hone_cli) -> None:
    run_dir = tmp_path / "run"
    result = hone_cli(
        "train", "mlp-digits", "--profile", "--train.max_steps=12", "--run-dir", str(run_dir),
        *(f"--{override}" for override in TINY),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "profile (steps 8-12, " in result.stderr
    assert "data " in result.stderr and "optimizer " in result.stderr
    assert RunFiles(run_dir).profile.exists()
