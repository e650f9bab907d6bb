"""End-to-end tuning in this process on linreg: the learning rate it finds, the trial run
directories, best.toml, the report, resume, pruning, several objectives and k-fold CV."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import numpy as np
import optuna
import pytest

from hone.cli import main
from hone.engine import Trainer
from hone.track.run import read_metrics
from hone.tune import TuneOptions, tune
from hone.tune.configs import TrialConfigs
from hone.tune.plots import _importance_problem
from tests.tune.conftest import LR_SPACE, linreg_config

FLOAT = optuna.distributions.FloatDistribution(0.0, 3.0)


def load(result) -> optuna.Study:
    return optuna.load_study(study_name=result.study, storage=result.storage)


@pytest.fixture(scope="module")
def lr_study(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("lr")
    config = linreg_config(root / "linreg.toml", LR_SPACE, pruner="none", report=True)
    options = TuneOptions(str(config), trials=14, directory=str(root / "tune"))
    return config, options, tune(options)


def test_tuned_lr_is_within_3x_of_the_grid_best(lr_study, tmp_path) -> None:
    config, _, result = lr_study
    # "The best" lr by brute force: the same 15-step run at 13 lrs spaced 1.8x apart.
    configs = TrialConfigs(str(config))
    losses = {}
    for i, lr in enumerate(np.geomspace(1e-3, 1.0, 13)):
        summary = Trainer(
            config=configs.build({"optim.lr": float(lr)}), run_dir=tmp_path / f"g{i}"
        ).fit()
        losses[float(lr)] = summary["best_val_loss"]
    best_lr = min(losses, key=lambda lr: losses[lr] if math.isfinite(losses[lr]) else math.inf)
    found = result.best[0].params["optim.lr"]
    assert best_lr / 3 <= found <= best_lr * 3, (found, best_lr, losses)
    # The loss at the found lr is as good as the grid's best (the optimum is a flat valley).
    assert result.best[0].values[0] <= losses[best_lr] * 1.05


def test_each_trial_is_a_tagged_run_directory(lr_study) -> None:
    _, _, result = lr_study
    study = load(result)
    assert len(study.trials) == 14
    for trial in study.trials:
        run = result.directory / "trials" / f"trial-{trial.number}"
        assert trial.user_attrs["run_dir"] == str(run)
        cfg = tomllib.loads((run / "config.toml").read_text())
        assert cfg["optim"]["lr"] == pytest.approx(trial.params["optim.lr"])
        summary = json.loads((run / "summary.json").read_text())
        assert summary["trial"] == trial.number and summary["state"] == "COMPLETE"
        assert summary["values"]["val_loss"] == pytest.approx(trial.values[0])
        assert read_metrics(run)[-1]["step"] == 15 == trial.user_attrs["steps"]


def test_best_toml_reproduces_the_best_value(lr_study, tmp_path) -> None:
    _, _, result = lr_study
    assert result.best_config == result.directory / "best.toml"
    run = tmp_path / "again"
    assert main(["train", str(result.best_config), "--run-dir", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_loss"] == pytest.approx(result.best[0].values[0], rel=1e-6)


def test_report_has_every_plot_as_html_and_png(lr_study) -> None:
    _, _, result = lr_study
    report = result.directory / "report"
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert (report / f"{name}.html").stat().st_size > 1000
        assert (report / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (report / "intermediate_values.html").exists() and result.report_skipped == {}
    # One shared plotly.js: the pages open without a network.
    html = (report / "optimization_history.html").read_text()
    assert 'src="plotly.min.js"' in html and (report / "plotly.min.js").exists()


def test_running_again_resumes_up_to_the_new_total(lr_study) -> None:
    _, options, result = lr_study
    more = TuneOptions(**{**options.__dict__, "trials": 16, "overrides": ["tune.report=false"]})
    tune(more)
    assert len(load(result).trials) == 16
    tune(more)  # already there: no new trial
    assert len(load(result).trials) == 16


def test_pruned_trials_stop_at_an_evaluation(tmp_path) -> None:
    config = linreg_config(
        tmp_path / "c.toml",
        LR_SPACE,
        train={"max_steps": 60, "max_epochs": 0, "eval_every": 5},
        pruner="successive-halving",
        min_resource=5,
        sampler="random",
    )
    result = tune(TuneOptions(str(config), trials=10, directory=str(tmp_path / "t")))
    study = load(result)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(pruned) >= 3 and complete and len(pruned) + len(complete) == 10
    for t in pruned:
        run = Path(t.user_attrs["run_dir"])
        steps = max(e["step"] for e in read_metrics(run))
        # It stopped at the evaluation where the pruner said so: a multiple of eval_every.
        assert steps < 60 and steps % 5 == 0 and steps == max(t.intermediate_values)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["stop_reason"] == "pruned" and summary["steps"] == steps
    for t in complete:
        assert t.user_attrs["steps"] == 60
    spent = sum(t.user_attrs["steps"] for t in study.trials)
    assert spent < 0.7 * 60 * 10


def test_several_metrics_give_a_pareto_front(tmp_path) -> None:
    config = linreg_config(
        tmp_path / "c.toml",
        {"model.width": {"type": "int", "low": 1, "high": 16}},
        metric="val_loss,num_parameters",
        sampler="random",
    )
    result = tune(
        TuneOptions(
            str(config),
            ["model.name=mlp", "model.depth=1", "optim.name=adamw", "optim.lr=0.01"],
            trials=5,
            directory=str(tmp_path / "t"),
        )
    )
    study = load(result)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    for t in study.trials:
        # One hidden layer of width w on 5 features: 5w + w weights and biases, w + 1 out.
        assert t.values[1] == 7 * t.params["model.width"] + 1
    front = json.loads((tmp_path / "t" / "pareto.json").read_text())
    assert {row["trial"] for row in front} == {t.number for t in result.best}
    assert all(Path(row["config"]).exists() for row in front)


def test_cross_validation_mean_is_the_objective(tmp_path) -> None:
    config = linreg_config(tmp_path / "c.toml", LR_SPACE, sampler="random")
    result = tune(TuneOptions(str(config), trials=2, directory=str(tmp_path / "t"), cv=2))
    for t in load(result).trials:
        cv = json.loads((Path(t.user_attrs["run_dir"]) / "cv.json").read_text())
        assert t.values[0] == pytest.approx(cv["best_val_loss_mean"])
        assert t.user_attrs["steps"] == 2 * 15


def test_importances_need_two_complete_trials_and_a_varying_parameter() -> None:
    study = optuna.create_study()
    study.add_trial(
        optuna.trial.create_trial(params={"x": 1.0}, distributions={"x": FLOAT}, value=1)
    )
    assert "at least 2 complete trials, got 1" in _importance_problem(study)
    study.add_trial(
        optuna.trial.create_trial(params={"x": 1.0}, distributions={"x": FLOAT}, value=2)
    )
    assert "a parameter that takes two values" in _importance_problem(study)
    study.add_trial(
        optuna.trial.create_trial(params={"x": 2.0}, distributions={"x": FLOAT}, value=3)
    )
    assert _importance_problem(study) == ""


def test_show_prints_the_leaderboard_best_first(lr_study, capsys) -> None:
    _, _, result = lr_study
    assert main(["tune", "show", "linreg", "--dir", str(result.directory)]) == 0
    out = capsys.readouterr().out
    best = load(result).best_trial
    rows = [line for line in out.splitlines() if "complete" in line]
    assert rows and rows[0].split("│")[1].strip() == str(best.number)
    assert main(["tune", "show", "nope", "--dir", str(result.directory)]) == 2
    assert "no study named 'nope'" in capsys.readouterr().err
