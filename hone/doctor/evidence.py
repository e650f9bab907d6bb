"""What a run directory says about its training, in the shapes the doctor's rules use.

No model is built and torch is not needed: the run's records are read by hone.run_records
(config, summary, metrics events, statistics). A run may be live (no summary yet),
finished, or ended by the NaN guard (exit 3).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hone.config import Config
from hone.config.components import type_hints
from hone.config.fields import field_default
from hone.errors import ConfigError
from hone.run_files import RunFiles
from hone.run_records import (
    number,
    read_config,
    read_events,
    read_json,
    read_statistics,
    read_summary,
    task_metric,
)


@dataclass
class Evidence:
    """A run's numbers, in the shapes the rules use."""

    path: Path
    config: dict[str, Any]
    train: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, lr)
    val: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, metric)
    metric: str = ""  # the task's metric (hone.run_records.task_metric), `val`'s third value
    metric_direction: str = ""  # "min" or "max"; "" when unknown
    faults: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    run: dict[str, Any] = field(default_factory=dict)  # the stats "run" record
    layers: list[dict[str, Any]] = field(default_factory=list)  # stats "layers" records
    non_finite: list[dict[str, Any]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)  # per step, when stats were on

    # ------------------------------------------------------------------ config
    def get(self, dotted: str, default: Any = None) -> Any:
        """The run's value of config key `dotted` (section.key); where its config.toml lacks
        it, the default hone.config declares, else `default` (a key of only some models or
        optimizers, such as `optim.momentum`)."""
        section, _, key = dotted.partition(".")
        table = self.config.get(section, {})
        if key in table:
            return table[key]
        return _declared_defaults(section).get(key, default)

    @property
    def lr(self) -> float:
        return float(self.get("optim.lr"))

    @property
    def adapters(self) -> bool:
        """LoRA adapters trained on a frozen model ([lora] enabled): the statistics' gradients
        and updates are the adapters', the frozen layers' are zero."""
        return bool(self.get("lora.enabled", False))

    @property
    def from_checkpoint(self) -> bool:
        """The run started from a pretrained checkpoint's weights, not from an init."""
        return self.get("model.name") == "pretrained"

    @property
    def base_lr(self) -> float:
        """The configured lr of the first parameter group, the one whose lr is logged."""
        return float(self.get("optim.muon_lr", self.lr) if self.optimizer == "muon" else self.lr)

    @property
    def optimizer(self) -> str:
        return str(self.get("optim.name"))

    @property
    def model(self) -> str:
        return str(self.get("model.name"))

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
    summary, events, stats = read_summary(files), read_events(files), read_statistics(files)
    val = events.get("val", [])
    metric, direction = task_metric(summary, read_json(files.status), val)
    return Evidence(
        Path(run_dir),
        read_config(files),
        train=[
            (int(e["step"]), number(e.get("loss")), number(e.get("lr")))
            for e in events.get("train", [])
        ],
        val=[(int(e["step"]), number(e.get("loss")), number(e.get(metric))) for e in val],
        metric=metric,
        metric_direction=direction,
        faults=events.get("fault", []),
        summary=summary,
        run=stats.run,
        layers=stats.layers,
        non_finite=stats.non_finite,
        step_losses=[number(x) for record in stats.layers for x in record.get("losses", [])],
    )


@functools.cache
def _declared_defaults(section: str) -> dict[str, Any]:
    """The defaults hone.config declares for the keys of `section` that every run has
    (`optim.lr`, `schedule.name`); a chosen model's or optimizer's own keys are not among
    them (their configs load with the components, and torch)."""
    table = type_hints(Config).get(section)
    if not dataclasses.is_dataclass(table):
        return {}
    return {
        f.name: field_default(f) for f in dataclasses.fields(table) if not f.metadata.get("flatten")
    }
