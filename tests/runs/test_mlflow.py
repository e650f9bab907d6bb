"""`log.mlflow = true`: params, metrics and the final weights mirrored to a real local MLflow
store (MLflow's default: ./mlflow.db with artifacts in ./mlruns), read back through
MLflow's own client; a resumed run goes on in its MLflow run, a failed one is marked so, and
without MLflow installed the command says which extra to install."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import pytest

from hone.cli import main
from hone.config import load_config
from hone.engine import Trainer
from hone.errors import TrainingAborted
from hone.run_files import RunFiles
from hone.track.run import read_metrics
from tests.compress.conftest import QUIET, one_thread_in_tmp

mlflow = pytest.importorskip("mlflow", reason="MLflow is the optional extra hone-ml[mlflow]")

LINREG = ["train.max_epochs=0", "train.eval_every=5", "log.every=2", "log.mlflow=true", *QUIET]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """In a folder of their own, with log.mlflow_uri left at its default: a finished run, the
    same run resumed for 10 more steps, and a run that diverged."""
    folder = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp, one_thread_in_tmp(tmp_path_factory):
        mp.chdir(folder)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        Trainer(
            config=load_config("linreg", [*LINREG, "train.max_steps=10"]), run_dir=folder / "done"
        ).fit()
        Trainer(
            config=load_config("linreg", [*LINREG, "train.max_steps=10"]),
            run_dir=folder / "resumed",
        ).fit()
        cfg = load_config("linreg", [*LINREG, "train.max_steps=20"])
        Trainer(config=cfg, run_dir=folder / "resumed", resume=True).fit()
        nan = ["model.name=custom", "model.target=tests.runs.failing_model:factory"]
        nan += ["model.kwargs={after = 3, mode = 'nan'}", "train.max_steps=50"]
        trainer = Trainer(
            config=load_config("linreg", [*LINREG, *nan]), run_dir=folder / "diverged"
        )
        with pytest.raises(TrainingAborted):
            trainer.fit()
        del trainer
        gc.collect()  # the trainer went away unfinished: its MLflow run is marked failed
    return {"root": folder, "uri": f"sqlite:///{folder / 'mlflow.db'}"}  # type: ignore[dict-item]


def client_and_run(store, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=str(store["uri"]))
    record = json.loads(RunFiles(store["root"] / name).mlflow.read_text())
    return client, client.get_run(record["run_id"])


def test_params_metrics_and_weights_reach_mlflow(store) -> None:
    client, run = client_and_run(store, "done")
    assert (store["root"] / "mlflow.db").is_file() and (store["root"] / "mlruns").is_dir()
    assert run.info.status == "FINISHED" and run.info.run_name == "done"
    assert client.get_experiment(run.info.experiment_id).name == "linreg"
    assert run.data.params["optim.lr"] == str(load_config("linreg").optim.lr)
    assert run.data.params["model.name"] == "linear"
    events = read_metrics(store["root"] / "done")
    train = [e for e in events if e["split"] == "train"]
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(e["step"], e["loss"]) for e in train]
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 2  # steps 5 and 10
    summary = json.loads(RunFiles(store["root"] / "done").summary.read_text())
    assert run.data.metrics["best_val_loss"] == pytest.approx(summary["best_val_loss"])
    assert "test/loss" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.safetensors", "config.toml", "summary.json", "data.json"} <= artifacts


def test_a_resumed_run_goes_on_in_its_mlflow_run_and_a_failed_one_says_so(store) -> None:
    client, run = client_and_run(store, "resumed")
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps[0] == 2 and steps[-1] == 20  # both legs, one MLflow run
    experiment = client.get_experiment_by_name("linreg")
    assert len(client.search_runs([experiment.experiment_id])) == 3
    _, failed = client_and_run(store, "diverged")
    assert failed.info.status == "FAILED"


def test_without_mlflow_the_command_names_the_extra(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: import fails
    args = ["train", "linreg", "--run-dir", str(tmp_path / "r"), "--train.max_steps=2"]
    assert main([*args, *(f"--{o}" for o in LINREG)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'hone-ml[mlflow]'" in err


def test_a_federated_run_is_mirrored_like_a_trained_one(store, monkeypatch, tmp_path_factory):
    """`hone federate` with log.mlflow: a round is a step (hone.engine.shell)."""
    pytest.importorskip("flwr", reason="federated training needs the 'federated' extra")
    from hone.federate import federate

    monkeypatch.chdir(store["root"])  # the store the trained runs went to
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    rounds = ["federated.clients=2", "federated.rounds=2", "federated.local_steps=2"]
    cfg = load_config("mlp-digits", ["model.width=16", *QUIET, "log.mlflow=true", *rounds])
    with one_thread_in_tmp(tmp_path_factory):
        summary = federate(cfg, store["root"] / "federated")
    client, run = client_and_run(store, "federated")
    assert run.info.status == "FINISHED" and run.data.params["federated.clients"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [1, 2]
    assert run.data.metrics["best_val_loss"] == pytest.approx(summary["best_val_loss"])
    assert "model.safetensors" in {a.path for a in client.list_artifacts(run.info.run_id)}
