"""`hone predict`: a CSV of feature rows in, the same rows plus predictions out."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from hone.engine.inference import LoadedRun
from hone.errors import ConfigError


def read_csv(
    path: Path, feature_names: list[str]
) -> tuple[list[str], list[list[str]], torch.Tensor]:
    """(header, rows, features): the feature columns by name when the run knows them."""
    if not path.is_file():
        raise ConfigError(f"--input {path} does not exist; pass a CSV file with a header row")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ConfigError(f"--input {path} is empty; it needs a header row and data rows")
    header, body = rows[0], rows[1:]
    if feature_names:
        missing = [n for n in feature_names if n not in header]
        if missing:
            raise ConfigError(
                f"--input {path} lacks the feature columns {missing}; it needs: {', '.join(feature_names)}"
            )
        columns = [header.index(n) for n in feature_names]
    else:
        columns = list(range(len(header)))
    values = []
    for i, row in enumerate(body, start=2):
        try:
            values.append([float(row[c]) for c in columns])
        except (ValueError, IndexError):
            raise ConfigError(f"--input {path} line {i}: every feature must be a number") from None
    return header, body, torch.tensor(values, dtype=torch.float32).reshape(len(values), -1)


def predict_csv(
    run: str | Path,
    input_csv: str | Path,
    output_csv: str | Path,
    device: str = "auto",
    backend: str = "auto",
) -> int:
    """Write the input rows plus a `prediction` column (and class probabilities), computed
    by the model on `backend` (hone.engine.backends); returns the number of rows."""
    loaded = LoadedRun.load(run, device, backend=backend)
    if loaded.task.generates_text:
        raise ConfigError(
            f"{run} is a language model; use `hone sample {run} --prompt TEXT` instead of predict"
        )
    header, body, x = read_csv(Path(input_csv), loaded.feature_names)
    extra_header, extra = loaded.task.prediction_columns(
        loaded.predict(x), loaded.spec.num_outputs, loaded.class_labels
    )
    with open(output_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header + extra_header)
        for row, e in zip(body, extra, strict=True):
            writer.writerow(row + list(e))
    return len(body)
