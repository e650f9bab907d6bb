"""The names of the files in a run directory, in one place.

Every module that reads or writes a run (the trainer, checkpoints, eval/predict/sample, the
tuner, and later export, serve and report) takes a file's name from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.toml"  # the fully resolved config
METRICS = "metrics.jsonl"  # one JSON event per line: train, val, test, fault, sample
SUMMARY = "summary.json"  # what the run achieved; written at the end
MODEL = "model.safetensors"  # the final weights
DATA_INFO = "data.json"  # what eval/predict/sample need to read inputs as training did
CONVERTERS = "converters.json"  # model converters applied after building, in order
TOKENIZER = "tokenizer"  # folder: the tokenizer of a language model
CHECKPOINTS = "checkpoints"  # folder of step-NNNNNNN checkpoints
TENSORBOARD = "tensorboard"  # folder of TensorBoard event files
CV = "cv.json"  # k-fold cross-validation summary


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

    def eval_result(self, split: str) -> Path:
        """Where `hone eval --split SPLIT` writes its metrics."""
        return self.root / f"eval-{split}.json"

    def fold(self, index: int) -> RunFiles:
        """The run directory of fold `index` of a k-fold run."""
        return RunFiles(self.root / f"fold-{index}")
