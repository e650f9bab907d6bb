"""`log.mlflow = true`: the run mirrored to MLflow beside TensorBoard, as an observer.

What goes there: the resolved config as params (`optim.lr`, ...), every number of every
logged event as a metric by split (`train/loss`, `val/accuracy`, `test/loss`, `train/mfu`),
the summary's numbers when the run ends (`best_val_loss`, ...), and then the final weights,
config, summary and data.json (and a language model's tokenizer and sample) as artifacts.
The run id is kept in the run directory (mlflow.json), so a resumed run goes on in the same
MLflow run. Metrics are sent in batches, at most every `FLUSH_SECONDS` and at each
evaluation, so a fast loop does not wait on the tracking store at every log step.

MLflow is an optional extra (`pip install 'hone-ml[mlflow]'`, which brings mlflow-skinny);
it is imported only when the feature is on.
"""

from __future__ import annotations

import json
import os
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hone.config import Config, to_dict
from hone.engine.observers import Observer
from hone.errors import ConfigError
from hone.run_files import RunFiles
from hone.run_records import NOT_MEASURED, read_json, status

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer

FLUSH_SECONDS = 5.0
SPLITS = ("train", "val", "test")  # the events mirrored as metrics (not faults or samples)


def import_mlflow() -> Any:
    """The mlflow module, or a ConfigError that says which extra to install."""
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            "log.mlflow = true needs MLflow, which is not installed; "
            "pip install 'hone-ml[mlflow]', or set --log.mlflow=false"
        ) from None
    return mlflow


def flat_params(cfg: Config) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys, values as text (lists as JSON)."""
    out: dict[str, str] = {}

    def walk(tree: dict[str, Any], prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            else:
                text = value if isinstance(value, str) else json.dumps(value)
                out[f"{prefix}{key}"] = text[:6000]  # MLflow's limit on a param's value

    walk(to_dict(cfg), "")
    return out


class MLflowMirror(Observer):
    """Mirrors params, metrics and the final artifacts of one run to an MLflow run."""

    def __init__(self, cfg: Config, files: RunFiles) -> None:
        import_mlflow()
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self.cfg, self.files = cfg, files
        # "": MLflow's own default (MLFLOW_TRACKING_URI, else its local store).
        self.client = MlflowClient(tracking_uri=cfg.log.mlflow_uri or None)
        self.metric_type, self.param_type = Metric, Param
        # Shared with the finalizer, which sends what is left when the run ends unfinished.
        self.pending: list[Any] = []
        self.run_id = ""
        self._last_flush = time.monotonic()
        self._finalizer: weakref.finalize | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        params = flat_params(self.cfg)
        previous = self._previous_run()
        if previous is not None:  # a resumed run: go on in its MLflow run
            self.run_id = previous.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            # Params cannot change in MLflow; a resume keeps the config, new keys are logged.
            params = {k: v for k, v in params.items() if k not in previous.data.params}
        else:
            run = self.client.create_run(
                self._experiment_id(),
                run_name=self.files.root.name,
                tags={
                    "hone.run_dir": str(self.files.root.resolve()),
                    "hone.recipe": self.cfg.recipe,
                },
            )
            self.run_id = run.info.run_id
            record = {"tracking_uri": self.client.tracking_uri, "run_id": self.run_id}
            self.files.mlflow.write_text(json.dumps(record, indent=2) + "\n")
        self.client.log_batch(
            self.run_id, params=[self.param_type(k, v) for k, v in params.items()]
        )
        self._finalizer = weakref.finalize(
            self, _ended, self.client, self.run_id, self.pending, self.files.status
        )

    def _experiment_id(self) -> str:
        """MLFLOW_EXPERIMENT_NAME's experiment, else one named after the recipe."""
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or self.cfg.recipe or "hone"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        return str(self.client.create_experiment(name))

    def _previous_run(self) -> Any:
        """The MLflow run this run directory mirrored to before, in this tracking store."""
        try:
            record = json.loads(self.files.mlflow.read_text())
        except (OSError, ValueError):
            return None
        if record.get("tracking_uri") != self.client.tracking_uri:
            return None
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(record["run_id"])
        except MlflowException:  # deleted from the store since
            return None

    def on_log(self, trainer: Trainer, event: dict[str, Any]) -> None:
        split = event.get("split")
        if split == "sample":
            self.client.log_text(self.run_id, str(event.get("text", "")), "sample.txt")
            return
        if split not in SPLITS:
            return
        stamp, step = int(time.time() * 1000), int(event["step"])
        for key, value in event.items():
            if key not in NOT_MEASURED and isinstance(value, int | float):
                self.pending.append(self.metric_type(f"{split}/{key}", float(value), stamp, step))
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def on_evaluation(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        self.flush()

    def flush(self) -> None:
        """Send the metrics logged since the last flush."""
        _send(self.client, self.run_id, self.pending)
        self._last_flush = time.monotonic()

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        stamp, step = int(time.time() * 1000), trainer.state.step
        for key, value in summary.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.pending.append(self.metric_type(key, float(value), stamp, step))
        self.flush()
        files = self.files
        for path in (files.model, files.config, files.summary, files.data_info):
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        if files.tokenizer.is_dir():
            self.client.log_artifacts(self.run_id, str(files.tokenizer), files.tokenizer.name)
        if self._finalizer is not None:
            self._finalizer.detach()
        self.client.set_terminated(self.run_id, "FINISHED")


def _send(client: Any, run_id: str, pending: list[Any]) -> None:
    if pending:
        client.log_batch(run_id, metrics=list(pending))
        pending.clear()


def _ended(client: Any, run_id: str, pending: list[Any], status_file: Path) -> None:
    """The trainer went away unfinished: KILLED when a stop signal ended it (resumable),
    else FAILED. The status observer wrote its verdict at the signal, in status.json."""
    _send(client, run_id, pending)
    record = read_json(status_file) or {}
    client.set_terminated(run_id, "KILLED" if record.get("state") == status.STOPPED else "FAILED")


def mlflow_observers(cfg: Config, files: RunFiles) -> list[Observer]:
    """The MLflow mirror when `log.mlflow` is on (for the main process, like every run file)."""
    return [MLflowMirror(cfg, files)] if cfg.log.mlflow else []
