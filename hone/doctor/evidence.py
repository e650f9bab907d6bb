"""What a run directory says about its training, read from its files only.

No model is built and torch is not needed: the config is read as TOML, metrics.jsonl and
stats.jsonl as JSON lines. A run may be live (no summary yet), finished, or ended by the NaN
guard (exit 3); lines cut short by a kill are skipped. Records of a step written twice (a
rollback redoes steps) count once: the last one.
"""

from __future__ import annotations

import json
import math
import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hone.errors import ConfigError
from hone.metrics import METRICS
from hone.run_files import RunFiles


def number(value: Any) -> float:
    """A logged value as a float; NaN/inf were written as strings."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file (metrics, stats); a line cut short by a kill is
    skipped. `hone report` reads the run's files through it too."""
    if not path.is_file():
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


@dataclass
class Evidence:
    """A run's numbers, in the shapes the rules use."""

    path: Path
    config: dict[str, Any]
    train: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, lr)
    val: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, metric)
    metric: str = ""  # the task's metric (summary.json `metric`), the third value of `val`
    metric_direction: str = ""  # "min" or "max"; "" when unknown
    faults: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    run: dict[str, Any] = field(default_factory=dict)  # the stats "run" record
    layers: list[dict[str, Any]] = field(default_factory=list)  # stats "layers" records
    non_finite: list[dict[str, Any]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)  # per step, when stats were on

    # ------------------------------------------------------------------ config
    def get(self, dotted: str, default: Any = None) -> Any:
        section, _, key = dotted.partition(".")
        return self.config.get(section, {}).get(key, default)

    @property
    def lr(self) -> float:
        return float(self.get("optim.lr", 1e-3))

    @property
    def base_lr(self) -> float:
        """The configured lr of the first parameter group, the one whose lr is logged."""
        return float(self.get("optim.muon_lr", self.lr) if self.optimizer == "muon" else self.lr)

    @property
    def optimizer(self) -> str:
        return str(self.get("optim.name", "adamw"))

    @property
    def model(self) -> str:
        return str(self.get("model.name", "mlp"))

    @property
    def activation(self) -> str:
        return str(self.get("model.activation", ""))

    @property
    def steps(self) -> int:
        last = [s for s, _, _ in self.train] + [r["step"] for r in self.layers]
        return int((self.summary or {}).get("steps") or (max(last) if last else 0))

    # ------------------------------------------------------------------ series
    def losses(self) -> list[float]:
        """The finest training-loss series there is: per step when statistics were on,
        else the logged window means."""
        per_step = [x for x in self.step_losses if math.isfinite(x)]
        if len(per_step) >= 20:
            return per_step
        return [loss for _, loss, _ in self.train if math.isfinite(loss)]

    def loss_segments(self, count: int = 10) -> list[float]:
        """The training loss averaged over `count` equal segments of the run (medians, so a
        few wild steps do not move them)."""
        losses = self.losses()
        if len(losses) < count:
            return losses
        size = len(losses) / count
        return [
            statistics.median(losses[int(i * size) : max(int((i + 1) * size), int(i * size) + 1)])
            for i in range(count)
        ]

    def series(self, key: str, after_fraction: float = 0.0) -> list[float]:
        """A global stats value over the records (the first, at the initialization, only
        when after_fraction is 0), finite values only."""
        start = after_fraction * self.steps
        values = [number(r.get(key)) for r in self.layers if r["step"] > start or not start]
        return [v for v in values if math.isfinite(v)]

    def layer_values(
        self, key: str, types: tuple[str, ...] = (), last: int = 0
    ) -> dict[str, list[float]]:
        """Per layer name: `key` over the records (the last `last` records when > 0)."""
        records = self.layers[-last:] if last else self.layers
        out: dict[str, list[float]] = {}
        for record in records:
            for row in record["layers"]:
                if types and row["type"] not in types:
                    continue
                value = number(row.get(key))
                if math.isfinite(value):
                    out.setdefault(row["name"], []).append(value)
        return out

    def param_layers(self) -> int:
        """Layers with parameters in the stats records (depth, for gradient-flow rules)."""
        if not self.layers:
            return 0
        return sum(1 for row in self.layers[-1]["layers"] if "weight_norm" in row)


def read(run_dir: str | Path) -> Evidence:
    """Everything diagnosable of `run_dir`; a ConfigError when it is not a run directory."""
    files = RunFiles(run_dir)
    if not files.config.is_file() or not files.metrics.is_file():
        raise ConfigError(
            f"{run_dir} is not a run directory (no config.toml and metrics.jsonl); pass the "
            "directory `hone train` printed at its end"
        )
    evidence = Evidence(Path(run_dir), tomllib.loads(files.config.read_text()))
    if files.summary.is_file():
        evidence.summary = json.loads(files.summary.read_text())
    events = read_lines(files.metrics)
    val_events = [e for e in events if e.get("split") == "val"]
    evidence.metric, evidence.metric_direction = task_metric(evidence.summary, val_events)
    for event in events:
        split = event.get("split")
        if split == "train":
            evidence.train.append(
                (int(event["step"]), number(event.get("loss")), number(event.get("lr")))
            )
        elif split == "val":
            evidence.val.append(
                (int(event["step"]), number(event.get("loss")), number(event.get(evidence.metric)))
            )
        elif split == "fault":
            evidence.faults.append(event)
    by_step: dict[int, dict[str, Any]] = {}
    for record in read_lines(files.stats):
        kind = record.get("kind")
        if kind == "run":
            evidence.run = record
        elif kind == "layers":
            by_step[int(record["step"])] = record
        elif kind == "non_finite":
            evidence.non_finite.append(record)
    evidence.layers = [by_step[s] for s in sorted(by_step)]
    for record in evidence.layers:
        evidence.step_losses.extend(number(x) for x in record.get("losses", []))
    evidence.train = sorted(dict((s, (s, loss, lr)) for s, loss, lr in evidence.train).values())
    evidence.val = sorted(dict((s, (s, loss, m)) for s, loss, m in evidence.val).values())
    return evidence


NOT_METRICS = ("step", "split", "epoch", "loss")


def task_metric(
    summary: dict[str, Any] | None, val_events: list[dict[str, Any]]
) -> tuple[str, str]:
    """(name, direction) of the run's task metric: summary.json's `metric`, else (a live run)
    the first built-in metric a validation event holds, else its first number besides the
    loss. A user's own metric (`hone.Trainer(metrics=...)`) takes its direction from the
    summary's `metric_directions`; direction "" when unknown."""
    directions = dict((summary or {}).get("metric_directions") or {})
    name = str((summary or {}).get("metric") or "")
    if not name:
        keys = [k for e in val_events[:1] for k in e if k not in NOT_METRICS]
        name = next((k for k in keys if k in METRICS), keys[0] if keys else "")
    known = METRICS.get(name)
    return name, str(directions.get(name) or (known.direction if known else ""))
