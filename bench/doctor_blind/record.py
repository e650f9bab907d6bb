"""Read a run directory into plain curves: the one reader the blind checks use.

Only the run's own files are read (metrics.jsonl, stats.jsonl, summary.json, status.json,
config.toml, data.json), never anything the doctor computes.
"""

from __future__ import annotations

import json
import math
import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _number(value: Any) -> float:
    """A loss as written to JSON: a float, or a string such as 'inf' / 'nan'."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a killed run
            continue
    return rows


@dataclass
class RunRecord:
    """What a finished (or stopped) run left behind, as curves."""

    path: Path
    returncode: int
    train: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, lr)
    val: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    faults: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)  # stats.jsonl 'layers' rows
    summary: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    data_info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, returncode: int = 0) -> RunRecord:
        record = cls(path=path, returncode=returncode)
        for row in _read_lines(path / "metrics.jsonl"):
            split = row.get("split")
            if split == "train" and "loss" in row:
                record.train.append((row["step"], _number(row["loss"]), _number(row.get("lr"))))
            elif split == "val" and "loss" in row:
                record.val.append((row["step"], _number(row["loss"])))
            elif split == "fault":
                record.faults.append(row)
        record.layers = [r for r in _read_lines(path / "stats.jsonl") if r.get("kind") == "layers"]
        for name, attr in (("summary.json", "summary"), ("status.json", "status")):
            if (path / name).exists():
                setattr(record, attr, json.loads((path / name).read_text()))
        if (path / "data.json").exists():
            record.data_info = json.loads((path / "data.json").read_text())
        if (path / "config.toml").exists():
            record.config = tomllib.loads((path / "config.toml").read_text())
        return record

    # --- losses -------------------------------------------------------------------------
    @property
    def last_step(self) -> int:
        steps = [s for s, _, _ in self.train] + [s for s, _ in self.val]
        return max(steps, default=0)

    def initial_loss(self) -> float:
        """The loss of the first optimizer step (stats.jsonl records step 1), else the first log."""
        for row in self.layers:
            if row.get("step") == 1 and "loss" in row:
                return _number(row["loss"])
        return self.train[0][1] if self.train else math.nan

    def smoothed_train(self, window: int = 3) -> list[tuple[int, float]]:
        """Training loss as a running median over `window` logs: mini-batch noise removed."""
        out = []
        for i in range(len(self.train)):
            chunk = [loss for _, loss, _ in self.train[max(0, i - window + 1) : i + 1]]
            out.append((self.train[i][0], statistics.median(chunk)))
        return out

    def train_loss_at(self, step: int) -> float:
        """Smoothed training loss at the log nearest `step`."""
        smooth = self.smoothed_train()
        return min(smooth, key=lambda pair: abs(pair[0] - step))[1] if smooth else math.nan

    def final_train_loss(self) -> float:
        """Median of the last three training logs."""
        tail = [loss for _, loss, _ in self.train[-3:]]
        return statistics.median(tail) if tail else math.nan

    def final_val_loss(self) -> float:
        if self.val:
            return self.val[-1][1]
        return _number(self.summary.get("final_val_loss"))

    def any_non_finite(self) -> bool:
        losses = [loss for _, loss, _ in self.train] + [loss for _, loss in self.val]
        fault_values = [
            _number(f.get(key)) for f in self.faults for key in ("loss", "grad_norm") if key in f
        ]
        return any(not math.isfinite(x) for x in losses + fault_values)

    # --- the learning rate --------------------------------------------------------------
    def peak_lr(self) -> float:
        """The largest lr: logged, or `optim.lr` itself (a schedule may have cut it before
        the first log)."""
        logged = [lr for _, _, lr in self.train if math.isfinite(lr)]
        configured = self.config_value("optim.lr")
        if isinstance(configured, int | float):
            logged.append(float(configured))
        return max(logged, default=math.nan)

    def final_lr(self) -> float:
        return self.train[-1][2] if self.train else math.nan

    # --- network statistics -------------------------------------------------------------
    def weight_layer_grad_ratio(self, row: dict[str, Any]) -> float:
        """Gradient norm of the first weight layer over that of the last (input over output)."""
        norms = [layer["grad_norm"] for layer in row.get("layers", []) if "grad_norm" in layer]
        if len(norms) < 2 or not norms[-1]:
            return math.nan
        return norms[0] / norms[-1]

    def activation_layers(self, row: dict[str, Any], kinds: tuple[str, ...]) -> list[dict]:
        return [layer for layer in row.get("layers", []) if layer.get("type") in kinds]

    def num_outputs(self) -> int:
        info = self.data_info
        return int(info.get("num_outputs") or info.get("vocab_size") or 0)

    def config_value(self, dotted: str) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return node
