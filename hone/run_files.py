"""The names of the files in a run directory, in one place.

Every module that reads or writes a run (the trainer, checkpoints, eval/predict/sample, the
tuner, and later export, serve and report) takes a file's name from here; hone.run_records
reads the records (summary, status, metrics, statistics) that `hone runs`, `hone doctor` and
`hone report` show.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

CONFIG = "config.toml"  # the fully resolved config
METRICS = "metrics.jsonl"  # one JSON event per line: train, val, test, fault, sample
SUMMARY = "summary.json"  # what the run achieved; written at the end
MODEL = "model.safetensors"  # the final weights
DATA_INFO = "data.json"  # what eval/predict/sample need to read inputs as training did
CONVERTERS = "converters.json"  # model converters applied after building, in order
# where the run's user modules (model.target, data.target) were imported from: the folder
# searched first when the run is loaded again (hone.imports)
IMPORTS = "imports.json"
TOKENIZER = "tokenizer"  # folder: the tokenizer of a language model
CHECKPOINTS = "checkpoints"  # folder of step-NNNNNNN checkpoints
TENSORBOARD = "tensorboard"  # folder of TensorBoard event files
CV = "cv.json"  # k-fold cross-validation summary
# `hone federate`: how the training split was divided, each client's size and label counts
PARTITIONS = "partitions.json"
PROFILE = "profile.json"  # --profile: top operators and step-time shares of the window
PROFILE_TABLE = "profile.txt"  # --profile: torch.profiler's table of operators by self time
PROFILE_TRACE = "profile-trace.json"  # --profile: Chrome/Perfetto trace of the window
# --profile: the trace again, in TENSORBOARD, where its profiler plugin finds a run "profile"
TENSORBOARD_PROFILE_TRACE = "profile/hone.pt.trace.json"
STATS = "stats.jsonl"  # training statistics: per-layer gradients, weights, activations
COMPRESS = "compress.json"  # `hone compress`: the method, and the original vs compressed table
# `hone compress --quantize int8`: the int8 model LoadedRun runs instead of MODEL (kept, fp32),
# an ONNX Runtime graph or torch dynamic-int8 weights, by the backend
MODEL_INT8_ONNX = "model-int8.onnx"
MODEL_INT8 = "model-int8.safetensors"
ONNX = "model.onnx"  # `hone export --format onnx`: the model as an ONNX graph
PARITY_SUFFIX = ".parity.json"  # beside an exported model: ONNX Runtime vs PyTorch outputs
BUNDLE = "bundle"  # folder: `hone export --format safetensors`, loadable without the run
MANIFEST = "manifest.json"  # in a bundle: the sha256 and size of each of its files
# Whether the run is alive: running (pid, host, heartbeat), finished, stopped or exited; rank
# 0's trainer keeps it (hone.engine.run_status) in the format of hone.run_records.status
STATUS = "status.json"
MLFLOW = "mlflow.json"  # log.mlflow: the MLflow run mirrored to; a resume goes on in it
REPORT = "report.html"  # `hone report RUN`: the page of plots, by default in the run directory
# In a tuning directory (`hone tune`): the study's SQLite database, which `hone report` looks for
STUDY_DB = "study.db"
# What LoadedRun.load reads (all but CONFIG, MODEL and DATA_INFO only when present): a
# bundle holds exactly these.
INFERENCE_FILES = (
    CONFIG, MODEL, DATA_INFO, CONVERTERS, IMPORTS, TOKENIZER, MODEL_INT8_ONNX, MODEL_INT8,
)  # fmt: skip


@dataclass(frozen=True)
class RunFiles:
    """The paths of one run directory's files."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def model(self) -> Path:
        return self.root / MODEL

    @property
    def data_info(self) -> Path:
        return self.root / DATA_INFO

    @property
    def converters(self) -> Path:
        return self.root / CONVERTERS

    @property
    def imports(self) -> Path:
        return self.root / IMPORTS

    @property
    def tokenizer(self) -> Path:
        return self.root / TOKENIZER

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    @property
    def cv(self) -> Path:
        return self.root / CV

    @property
    def stats(self) -> Path:
        return self.root / STATS

    @property
    def partitions(self) -> Path:
        return self.root / PARTITIONS

    @property
    def status(self) -> Path:
        return self.root / STATUS

    @property
    def mlflow(self) -> Path:
        return self.root / MLFLOW

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def onnx(self) -> Path:
        return self.root / ONNX

    @property
    def bundle(self) -> Path:
        return self.root / BUNDLE

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def compress(self) -> Path:
        return self.root / COMPRESS

    @property
    def model_int8_onnx(self) -> Path:
        return self.root / MODEL_INT8_ONNX

    @property
    def model_int8(self) -> Path:
        return self.root / MODEL_INT8

    @property
    def profile(self) -> Path:
        return self.root / PROFILE

    @property
    def profile_table(self) -> Path:
        return self.root / PROFILE_TABLE

    @property
    def profile_trace(self) -> Path:
        return self.root / PROFILE_TRACE

    @property
    def tensorboard_profile_trace(self) -> Path:
        return self.root / TENSORBOARD / TENSORBOARD_PROFILE_TRACE

    def eval_result(self, split: str) -> Path:
        """Where `hone eval --split SPLIT` writes its metrics."""
        return self.root / f"eval-{split}.json"

    def fold(self, index: int) -> RunFiles:
        """The run directory of fold `index` of a k-fold run."""
        return RunFiles(self.root / f"fold-{index}")


def default_run_dir(recipe: str, root: str | Path = "runs") -> Path:
    """runs/<recipe>-<UTC timestamp>, with a numeric suffix if that already exists."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Path(root) / f"{recipe or 'run'}-{stamp}"
    path, n = base, 1
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    return path


def parity_report(exported: Path) -> Path:
    """Where the parity check of an exported model is stored: beside it, its name + suffix."""
    return exported.with_name(exported.name + PARITY_SUFFIX)


@contextmanager
def staging_folder(target: Path) -> Iterator[Path]:
    """An empty folder beside `target`, removed afterwards with whatever is left in it: where a
    new run folder or export is written before one rename moves it into place.

    Beside, because a rename from there into place is atomic (one file system). On an error
    the folders made to hold `target` are removed too: a failure writes nothing.
    """
    missing = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
    except BaseException:
        if missing:
            shutil.rmtree(missing[-1], ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
