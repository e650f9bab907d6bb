"""`hone federate` on the command line: a run that eval loads, bad input as one line with exit
code 2, a missing Flower named with its extra, and the Flower app --deploy writes."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path

import pytest

from hone.cli import main
from hone.federate.protocol import config_from_text
from tests.federate.conftest import TINY

FLAGS = [f"--{item}" for item in TINY]
SMALL = [*FLAGS, "--federated.clients=2", "--federated.rounds=1", "--federated.local_steps=2"]


def test_a_federated_run_from_the_command_line_is_evaluated_like_any_run(
    tmp_path: Path, hone_cli, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    done = hone_cli("federate", "mlp-digits", *SMALL, "--run-dir", str(run), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rounds"] == 1 and summary["run_dir"] == str(run)
    assert "configure_train" not in done.stderr  # Flower's INFO lines are quieted
    assert main(["eval", str(run), "--split", "test", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["accuracy"] == pytest.approx(summary["test_accuracy"])


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--federated.clients=0", "federated.clients must be at least 1"),
        ("--federated.fraction=0", "federated.fraction must be greater than 0"),
        ("--federated.fraction=1.5", "federated.fraction must be at most 1"),
        ("--federated.alpha=0", "federated.alpha must be greater than 0"),
        ("--federated.clients=5000", "more than the 1257 training samples"),
        ("--federated.strategy=fedsgd", "unknown strategy 'fedsgd'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, message: str
) -> None:
    code = main(["federate", "mlp-digits", *SMALL, flag, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_without_flower_the_extra_to_install_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "flwr" else find_spec(name)
    )
    assert main(["federate", "mlp-digits"]) == 2
    assert "pip install 'hone-ml[federated]'" in capsys.readouterr().err


def test_deploy_writes_a_flower_app_of_hones_own_components(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flwr.common.config import validate_config

    app = tmp_path / "app"
    code = main(["federate", "mlp-digits", *SMALL, "--deploy", str(app), "--run-dir", "r"])
    assert code == 0 and "flwr run" in capsys.readouterr().out
    project = tomllib.loads((app / "pyproject.toml").read_text())
    valid, errors, _ = validate_config(project, check_module=True, project_dir=app)
    assert valid, errors
    run_config = project["tool"]["flwr"]["app"]["config"]
    assert run_config["run-dir"] == str(Path("r").resolve())
    cfg = config_from_text(run_config["hone-config"])  # the whole config, overrides included
    assert cfg.federated.clients == 2 and cfg.model.width == 16
