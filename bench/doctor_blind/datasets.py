"""Data files some cases train on, generated from a seed or cut from hone's corpus (no download).

The two npz files are for the input-scale cases. Each has features whose scales differ by orders of magnitude: one column in the thousands
(and offset), one in the thousandths, the rest near 1, the way raw tabular data often comes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

SCALES = np.array([1000.0, 0.001, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # per feature
OFFSETS = np.array([500.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])


def _features(rng: np.random.Generator, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(raw features, the same features at unit scale) of shape (num_samples, 8)."""
    unit = rng.normal(size=(num_samples, SCALES.size))
    return unit * SCALES + OFFSETS, unit


def scaled_regression(path: Path) -> None:
    """y = w . x_unit + 0.1 noise, with x written at its raw scale."""
    rng = np.random.default_rng(0)
    raw, unit = _features(rng, 1000)
    y = unit @ rng.normal(size=SCALES.size) + 0.1 * rng.normal(size=len(unit))
    np.savez(path, X=raw.astype(np.float32), y=y.astype(np.float32))


def scaled_classification(path: Path) -> None:
    """Four classes separated by a random linear map of the unit-scale features."""
    rng = np.random.default_rng(1)
    raw, unit = _features(rng, 1200)
    logits = unit @ rng.normal(size=(SCALES.size, 4)) * 2.0
    y = logits.argmax(axis=1)
    np.savez(path, X=raw.astype(np.float32), y=y.astype(np.int64))


def tiny_text(path: Path) -> None:
    """4,000 characters of Shakespeare (from hone's corpus): small enough to memorize.

    Read in a child process started in the data folder, so that it imports the `hone` that
    `hone train` will run (the installed one, or PYTHONPATH's), not a source tree beside it.
    """
    code = (
        "import sys; from hone.data.text import shakespeare_text; "
        "sys.stdout.write(shakespeare_text()[100_000:104_000])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=path.parent, capture_output=True, text=True, check=True
    )
    path.write_text(done.stdout)


DATASETS: dict[str, Callable[[Path], None]] = {
    "scaled_regression.npz": scaled_regression,
    "scaled_classification.npz": scaled_classification,
    "tiny_text.txt": tiny_text,
}


def write_all(folder: Path) -> dict[str, Path]:
    """Write every data file into `folder`; answer {name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, make in DATASETS.items():
        path = folder / name
        if not path.exists():
            make(path)
        paths[name] = path
    return paths
