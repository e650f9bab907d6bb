"""Reload a finished run (safetensors weights only) to evaluate it or predict with it."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hone.config import Config, load_config
from hone.data import Preprocessor, TensorData, build_data
from hone.engine.evaluate import evaluate, tensor_batches
from hone.engine.runtime import precision_context, resolve_device
from hone.engine.trainer import model_spec
from hone.errors import ConfigError
from hone.losses import build_loss
from hone.models import ModelSpec, build_model


def _run_path(run: str | Path) -> Path:
    path = Path(run)
    if not (path / "config.toml").is_file():
        raise ConfigError(
            f"{run} is not a hone run directory (no config.toml); pass a folder made by `hone train`"
        )
    if not (path / "model.safetensors").is_file():
        raise ConfigError(
            f"{run} has no model.safetensors: the run did not finish; resume it with `hone train --resume {run}`"
        )
    return path


def load_run_model(
    run: str | Path, spec: ModelSpec, cfg: Config, device: torch.device
) -> nn.Module:
    """Build the run's model and load its final weights from safetensors (nothing unpickled)."""
    from safetensors.torch import load_model

    model = build_model(cfg.model, spec).to(device)
    load_model(model, str(Path(run) / "model.safetensors"), device=str(device))
    model.eval()
    return model


def run_config(run: str | Path) -> Config:
    return load_config(str(_run_path(run) / "config.toml"))


def evaluate_run(run: str | Path, split: str = "val", device: str = "auto") -> dict[str, Any]:
    """Metrics of a finished run on `split`; also written to RUN/eval-<split>.json."""
    path = _run_path(run)
    cfg = run_config(path)
    dev = resolve_device(device)
    data = build_data(cfg)
    spec = model_spec(data, cfg)
    model = load_run_model(path, spec, cfg, dev)
    task = spec.task
    loss_fn = build_loss(cfg.loss, task)
    autocast = precision_context(cfg.train, dev)
    if isinstance(data, TensorData):
        if split not in ("train", "val", "test"):
            raise ConfigError(f"--split must be train, val or test, got {split!r}")
        x, y = getattr(data, split)
        if len(x) == 0:
            raise ConfigError(f"the {split} split of this run is empty; choose another --split")
        batches: Any = tensor_batches(x, y, cfg.train.eval_batch_size)
    else:
        from hone.data import WindowBatcher

        if split not in ("train", "val"):
            raise ConfigError(f"language-model runs have train and val splits, got --split={split}")
        tokens = data.val if split == "val" else data.train
        b = WindowBatcher(tokens, cfg.model.block_size, cfg.train.batch_size, seed=1234)
        batches = (b.next_step()[0] for _ in range(cfg.train.eval_batches))
    result = {"split": split, **evaluate(model, batches, loss_fn, task, dev, autocast)}
    (path / f"eval-{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _read_csv(
    path: Path, feature_names: list[str]
) -> tuple[list[str], list[list[str]], torch.Tensor]:
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
    return header, body, torch.tensor(values, dtype=torch.float32)


def predict_csv(
    run: str | Path, input_csv: str | Path, output_csv: str | Path, device: str = "auto"
) -> int:
    """Write the input rows plus a `prediction` column (and class probabilities); returns rows."""
    path = _run_path(run)
    cfg = run_config(path)
    info = json.loads((path / "data.json").read_text())
    if info["task"] == "lm":
        raise ConfigError(
            f"{run} is a language model; use `hone sample {run} --prompt TEXT` instead of predict"
        )
    dev = resolve_device(device)
    spec = ModelSpec(info["task"], tuple(info["input_shape"]), info["num_outputs"])
    model = load_run_model(path, spec, cfg, dev)
    header, body, x = _read_csv(Path(input_csv), info["feature_names"])
    expected = math.prod(spec.input_shape)
    if x.shape[1] != expected:
        raise ConfigError(f"--input has {x.shape[1]} feature columns, the model expects {expected}")
    pre = Preprocessor()
    pre.load_state_dict(info["preprocessor"])
    x = pre(x).reshape(len(x), *spec.input_shape)
    with torch.no_grad():
        out = model(x.to(dev)).float().cpu()
    labels = info.get("class_labels") or []
    extra_header = ["prediction"]
    if spec.task == "classification":
        probs = out.softmax(-1)
        pred = [labels[i] if labels else i for i in out.argmax(-1).tolist()]
        extra_header += [f"p_{labels[k] if labels else k}" for k in range(spec.num_outputs)]
        extra = [[p, *(f"{v:.6g}" for v in pr)] for p, pr in zip(pred, probs.tolist(), strict=True)]
    elif spec.task == "binary":
        probs = out.reshape(-1).sigmoid()
        extra_header.append("p_1")
        extra = [[int(p > 0.5), f"{p:.6g}"] for p in probs.tolist()]
    else:
        extra = [[*(f"{v:.6g}" for v in row)] for row in out.reshape(len(out), -1).tolist()]
        if out.reshape(len(out), -1).shape[1] > 1:
            extra_header = [f"prediction_{k}" for k in range(out.shape[1])]
    with open(output_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header + extra_header)
        for row, e in zip(body, extra, strict=True):
            writer.writerow(row + list(e))
    return len(body)
