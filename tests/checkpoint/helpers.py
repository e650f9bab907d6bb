"""Tiny runs for the checkpoint tests: configs, a data set, a crash, and what to compare."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from hone.config import Config, load_config
from hone.engine.step import Stepper
from hone.track.run import read_metrics

# Keys of a logged event that measure time, not computation: they differ between runs.
TIMING_KEYS = {"elapsed", "samples_per_second", "tokens_per_second", "mfu"}


def blobs(num_samples: int = 240, num_features: int = 6, num_classes: int = 3):
    """A small seeded classification set (data.name=custom, data.target=...:blobs)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 2.0, (num_classes, num_features))
    y = rng.integers(0, num_classes, num_samples)
    x = centers[y] + rng.normal(0, 1.0, (num_samples, num_features))
    return x.astype(np.float32), y


BASE = [
    "train.deterministic=true",
    "train.max_epochs=0",
    "log.tensorboard=false",
    "log.progress=off",
    "log.every=1",
]

MLP = [
    "data.name=custom",
    "data.target=tests.checkpoint.helpers:blobs",
    "data.task=classification",
    "model.name=mlp",
    "model.depth=2",
    "model.width=16",
    "model.dropout=0.1",  # the global torch RNG matters between steps
    "train.batch_size=16",
    "train.eval_every=10",
]

LINREG = [
    "data.name=synthetic_linear",
    "data.num_samples=200",
    "model.name=linear",
    "loss.name=mse",
    "train.batch_size=16",
]


def text_file(folder: Path) -> Path:
    """A few kilobytes of text with some structure, for a tiny character-level GPT."""
    rng = np.random.default_rng(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis"]
    lines = [" ".join(rng.choice(words, 8)) for _ in range(300)]
    path = folder / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def gpt(folder: Path) -> list[str]:
    return [
        "data.name=text",
        f"data.path={text_file(folder)}",
        "data.val_fraction=0.1",
        "loss.name=cross_entropy",
        "model.name=gpt",
        "model.n_layer=1",
        "model.n_head=2",
        "model.n_embd=16",
        "model.block_size=16",
        "model.dropout=0.1",
        "train.batch_size=8",
        "train.eval_every=10",
        "train.eval_batches=2",
        "train.sample_tokens=0",
    ]


def config(*overrides: str) -> Config:
    return load_config(None, [*BASE, *overrides])


class Crash(Exception):
    """Stands in for a SIGKILL in in-process tests."""


@contextmanager
def crash_at_step(step: int) -> Iterator[None]:
    """Make every Trainer built inside raise `Crash` when asked for the batch of `step` + 1."""
    original = Stepper.step

    def train_step(self: Stepper, batches):  # type: ignore[no-untyped-def]
        if self.owner.state.step == step:
            raise Crash(step)
        return original(self, batches)

    Stepper.step = train_step  # type: ignore[method-assign]
    try:
        yield
    finally:
        Stepper.step = original  # type: ignore[method-assign]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run_dir) / "model.safetensors"))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def events(run_dir: Path, split: str) -> list[dict]:
    """The run's events of one split, timing keys removed."""
    return [
        {k: v for k, v in e.items() if k not in TIMING_KEYS}
        for e in read_metrics(run_dir)
        if e["split"] == split
    ]


def train_steps(run_dir: Path) -> list[int]:
    return [e["step"] for e in events(run_dir, "train")]


def checkpoint_steps(run_dir: Path) -> list[int]:
    folder = Path(run_dir) / "checkpoints"
    return sorted(int(p.name[5:]) for p in folder.glob("step-*")) if folder.is_dir() else []


def manifest(run_dir: Path, step: int) -> dict:
    return json.loads((Path(run_dir) / f"checkpoints/step-{step:07d}/manifest.json").read_text())
