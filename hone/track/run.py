"""The run directory: resolved config, metrics.jsonl, TensorBoard events, summary.json.

Only the main process (rank 0) writes; on other ranks every method is a no-op, so the
engine never branches on rank to log.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from hone.config import Config, to_dict, to_toml
from hone.imports import import_record
from hone.run_files import RunFiles
from hone.run_records import NOT_MEASURED


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so every line stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLog:
    """Writes a run's files; silent on every rank but the main one."""

    def __init__(
        self,
        path: Path,
        cfg: Config,
        is_main: bool = True,
        tensorboard: bool = True,
        purge_step: int | None = None,
        config_now: bool = True,
    ) -> None:
        """`config_now=False`: config.toml waits for `write_config` (a resumed run writes its
        config once its checkpoint has loaded: a refused resume leaves the old one)."""
        self.path = Path(path)
        self.is_main = is_main
        self._metrics = None
        self._tb: Any = None
        if not is_main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        files = RunFiles(self.path)
        if config_now:
            self.write_config(cfg)
        # Line-buffered append: every event is on disk as soon as it is logged, so a killed run
        # loses nothing it had logged, and a resumed run appends to the same file.
        self._metrics = open(files.metrics, "a", buffering=1)  # noqa: SIM115
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(files.tensorboard), purge_step=purge_step)

    def write_config(self, cfg: Config) -> None:
        """config.toml, the fully resolved config, and where model.target / data.target were
        imported from (the model is built by now: loading the run looks there first)."""
        if not self.is_main:
            return
        files = RunFiles(self.path)
        files.config.write_text(to_toml(cfg))
        if imports := import_record(to_dict(cfg)):
            files.imports.write_text(json.dumps(imports, indent=2) + "\n")

    def log(self, event: dict[str, Any]) -> None:
        """Append one event (step, split, loss, ...) to metrics.jsonl and TensorBoard."""
        if self._metrics is None:
            return
        self._metrics.write(json.dumps({k: _clean(v) for k, v in event.items()}) + "\n")
        if self._tb is not None:
            split, step = event.get("split", "train"), event["step"]
            for key, value in event.items():
                if key not in NOT_MEASURED and isinstance(value, int | float):
                    self._tb.add_scalar(f"{split}/{key}", value, step)

    @property
    def has_tensorboard(self) -> bool:
        return self._tb is not None

    def scalar(self, tag: str, value: float, step: int) -> None:
        """A TensorBoard scalar that is not an event of metrics.jsonl (training statistics)."""
        if self._tb is not None:
            self._tb.add_scalar(tag, value, step)

    def histogram(self, tag: str, values: Any, step: int) -> None:
        if self._tb is not None:
            self._tb.add_histogram(tag, values, step)

    def text(self, tag: str, text: str, step: int) -> None:
        if self._tb is not None:
            self._tb.add_text(tag, text, step)

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        if not self.is_main:
            return
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(json.dumps({k: _clean(v) for k, v in data.items()}, indent=2) + "\n")
        os.replace(tmp, self.path / name)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All events of a run's metrics.jsonl."""
    with open(RunFiles(path).metrics) as f:
        return [json.loads(line) for line in f if line.strip()]
