"""`hone runs compare A B [C ...]`: what differs between runs' configs, and how they ended.

Configs are compared as flat dotted keys (`optim.lr`); a key one run lacks counts as a
difference (shown as None). The final metrics are the summary's numbers (and the state), so
a comparison of a run still training shows where it stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hone.errors import ConfigError
from hone.runs.records import RunRecord, is_run, read_run

# Summary keys that describe the machine or the run's identity, not its result.
_NOT_RESULTS = {
    "recipe", "run_dir", "torch_version", "numpy_version", "device", "seed", "glibc_tunables"
}  # fmt: skip
# The results shown first, in this order; the other numbers of the summaries follow.
_FIRST = (
    "steps",
    "epochs",
    "wall_seconds",
    "stop_reason",
    "final_val_loss",
    "best_val_loss",
    "best_val_metric",
)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}; an empty table stays a key."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(records: Sequence[RunRecord]) -> dict[str, list[Any]]:
    """Dotted config key -> the value in each run, for the keys whose values differ."""
    flat = [flatten(r.config()) for r in records]
    table = {key: [f.get(key) for f in flat] for key in sorted({k for f in flat for k in f})}
    return {key: values for key, values in table.items() if len({repr(v) for v in values}) > 1}


def final_metrics(records: Sequence[RunRecord]) -> dict[str, list[Any]]:
    """Result -> the value in each run: the state, then the summaries' numbers."""
    metrics = {r.summary.get("metric") for r in records}
    # best_val_metric is best_val_accuracy when every run measures accuracy.
    shared = metrics.pop() if len(metrics) == 1 else None
    rows: dict[str, list[Any]] = {"status": [r.status.label for r in records]}
    keys = [k for k in _FIRST if any(k in r.summary for r in records)]
    keys += sorted(
        {k for r in records for k in r.summary if k not in _NOT_RESULTS and k not in _FIRST}
    )
    for key in keys:
        values = [r.summary.get(key) for r in records]
        if key != "metric" and all(isinstance(v, int | float | str | None) for v in values):
            label = f"best_val_{shared}" if key == "best_val_metric" and shared else key
            rows[label] = values
    return rows


@dataclass
class Comparison:
    """Runs side by side: their names, config differences and final metrics."""

    runs: list[RunRecord]
    config: dict[str, list[Any]]
    metrics: dict[str, list[Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": [str(r.path) for r in self.runs],
            "config_differences": self.config,
            "final_metrics": self.metrics,
        }


def compare_runs(paths: Sequence[str | Path]) -> Comparison:
    """Compare the run directories `paths` (two or more)."""
    if len(paths) < 2:
        raise ConfigError(
            f"hone runs compare needs at least two runs, got {len(paths)}; "
            "e.g. hone runs compare runs/a runs/b"
        )
    for path in paths:
        if not is_run(Path(path)):
            raise ConfigError(f"{path} is not a run directory (no config.toml or summary.json)")
    records = [read_run(path, str(path)) for path in paths]
    return Comparison(records, config_differences(records), final_metrics(records))
