"""What a report shows of one run, read from its files: events by split, training
statistics, the record `hone runs` makes of it, the config and the doctor's findings.

Nothing is computed again and torch is not imported: the files are read by hone.run_records,
a live run as it stands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hone.run_files import RunFiles
from hone.run_records import NOT_MEASURED, number, read_events, read_statistics, task_metric
from hone.runs import RunRecord, read_run


@dataclass
class Series:
    """One line of a plot: x and y values, NaN where a value was not finite."""

    x: list[float]
    y: list[float]

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class RunData:
    """The events and statistics of one run directory."""

    path: Path
    record: RunRecord
    events: dict[str, list[dict[str, Any]]]  # split -> events, one per step
    stats: list[dict[str, Any]]  # stats.jsonl "layers" records, one per step
    stats_run: dict[str, Any]  # stats.jsonl's "run" record (initial vs uniform loss)
    config_text: str
    samples: list[dict[str, Any]] = field(default_factory=list)  # {"step", "text"}

    @classmethod
    def read(cls, path: str | Path) -> RunData:
        files = RunFiles(path)
        events = read_events(files)
        samples = events.pop("sample", [])
        stats = read_statistics(files)
        try:
            config_text = files.config.read_text()
        except OSError:
            config_text = ""
        record = read_run(files.root)
        return cls(files.root, record, events, stats.layers, stats.run, config_text, samples)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def metric(self) -> str:
        """The task metric measured on validation (accuracy, perplexity, r2, ...)."""
        summary, status = self.record.summary or None, self.record.status.record
        return task_metric(summary, status, self.events.get("val", []))[0]

    def series(self, split: str, key: str, x: str = "step") -> Series:
        """`key` of the `split` events against `x` ("step", or "elapsed": training seconds,
        which validation events get from the train events around them)."""
        found = [e for e in self.events.get(split, []) if key in e]
        steps = [float(e["step"]) for e in found]
        y = [number(e[key]) for e in found]
        if x == "step":
            return Series(steps, y)
        clock = [(float(e["step"]), number(e["elapsed"])) for e in self.events.get("train", [])]
        if not clock:
            return Series([], [])
        known_steps, seconds = zip(*clock, strict=True)
        return Series(list(np.interp(steps, known_steps, seconds)), y)

    def stat(self, key: str) -> Series:
        """A whole-model training statistic (grad_norm, update_ratio, ...) by step."""
        found = [r for r in self.stats if key in r]
        return Series([float(r["step"]) for r in found], [number(r[key]) for r in found])

    def layer_stat(self, key: str) -> dict[str, Series]:
        """A per-layer statistic by step, for each layer that has it, in forward order."""
        out: dict[str, Series] = {}
        for record in self.stats:
            for layer in record.get("layers", []):
                if key in layer:
                    label = f"{layer.get('name')} {layer.get('type', '')}".strip()
                    line = out.setdefault(label, Series([], []))
                    line.x.append(float(record["step"]))
                    line.y.append(number(layer[key]))
        return out

    def keys(self, split: str) -> list[str]:
        """The numeric keys of a split's events, in the order first logged."""
        seen: dict[str, None] = {}
        for event in self.events.get(split, []):
            for key, value in event.items():
                if key not in NOT_MEASURED and not isinstance(value, bool):
                    if isinstance(value, int | float) or value in ("nan", "inf", "-inf"):
                        seen[key] = None
        return list(seen)

    def test_metrics(self) -> dict[str, float]:
        """The test split's metrics (the last test event, else the summary's test_ keys)."""
        test = self.events.get("test", [])
        if test:
            return {k: number(v) for k, v in test[-1].items() if k not in ("step", "split")}
        summary = self.record.summary
        return {k[5:]: number(v) for k, v in summary.items() if k.startswith("test_")}
