"""What a resumed run may change, and how its metrics.jsonl is cut back to the checkpoint.

A resumed run continues bit for bit only if everything that shapes the computation stays as
it was, so its config comes from RUN/config.toml and overrides may change only what cannot
alter a training step: the bounds (a longer or shorter run), checkpointing, fault handling and
logging. A bound that moves where a schedule decays is refused by the trainer on load (the
checkpoint records the run's planned total steps).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from hone.checkpoint.format import parse_step
from hone.config import Config, load_config
from hone.errors import ConfigError
from hone.run_files import CHECKPOINTS, RunFiles

RESUME_OVERRIDABLE = frozenset(
    {
        "train.max_steps",
        "train.max_epochs",
        "train.max_seconds",
        "train.checkpoint_every",
        "train.keep_last",
        "train.keep_best",
        "train.max_bad_steps",
        "train.max_rollbacks",
        "train.rollback_skip",
        "train.sample_tokens",
        "log.every",
        "log.progress",
        "log.tensorboard",
        "log.stats_every",  # statistics and profiling watch the run, never change it
        "train.profile",
        "train.profile_wait",
        "train.profile_warmup",
        "train.profile_steps",
        "data.cache_dir",
    }
)


def run_config_path(run_dir: Path) -> Path:
    """RUN/config.toml, or for a k-fold run that has not finished, its first fold's."""
    for path in (RunFiles(run_dir).config, RunFiles(run_dir).fold(0).config):
        if path.is_file():
            return path
    raise ConfigError(
        f"--resume {run_dir} has no config.toml; pass the run directory of an earlier `hone train`"
    )


def _flat(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if dataclasses.is_dataclass(value):
                # A flattened section (the model family's own config) keeps its parent's keys.
                walk(value, prefix if f.metadata.get("flatten") else f"{prefix}{f.name}.")
            else:
                out[f"{prefix}{f.name}"] = value

    walk(cfg, "")
    return out


def check_resumable_change(stored: Config, new: Config) -> None:
    """Raise a ConfigError naming the first setting that differs and may not change."""
    old, cur = _flat(stored), _flat(new)
    for key in old:
        if key not in RESUME_OVERRIDABLE and old[key] != cur.get(key):
            raise ConfigError(
                f"{key} must stay {old[key]!r} to resume this run exactly, got {cur.get(key)!r}; "
                f"resume with the run's own config (only {', '.join(sorted(RESUME_OVERRIDABLE))} "
                "may change), or start a new run in another --run-dir"
            )


def resume_config(run_dir: Path, overrides: list[str]) -> Config:
    """The config of the run in `run_dir` with `overrides` applied (only resumable ones)."""
    path = run_config_path(run_dir)
    stored = load_config(str(path))
    cfg = load_config(str(path), overrides)
    check_resumable_change(stored, cfg)
    return cfg


def truncate_metrics(run_dir: Path, size: int, keep_split: str = "") -> None:
    """Cut metrics.jsonl back to `size` bytes: what had been logged when the checkpoint was
    written. Events logged later are logged again as the run redoes their steps, so each
    appears once; those of split `keep_split` (a rollback keeps its "fault" history) are
    moved to the new end instead."""
    path = RunFiles(run_dir).metrics
    if not path.exists() or path.stat().st_size <= size:
        return
    # In place, not rewritten: the RunLog may hold the file open in append mode (a rollback),
    # and its O_APPEND writes land at the new end.
    with open(path, "r+b") as f:
        f.seek(size)
        tail = f.read()
        f.truncate(size)
        f.seek(size)
        for line in tail.splitlines(keepends=True):
            if keep_split and line.endswith(b"\n") and _split_of(line) == keep_split:
                f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _split_of(line: bytes) -> str:
    try:
        return str(json.loads(line).get("split", ""))
    except ValueError:  # a line cut short by a kill
        return ""


def plan_resume(
    resume: str, run_dir: str | None, source: str | None, overrides: list[str], default: str
) -> tuple[Config, Path, bool | str]:
    """What `hone train --resume` continues: (config, run directory, Trainer's `resume`).

    `resume` is "auto" (continue --run-dir if it has a checkpoint, else start it), a run
    directory, or one checkpoint folder in it. Without a config argument the run's own
    config.toml is used, with `overrides` on top; with one, it must match the run's.
    """
    target: bool | str
    if resume == "auto":
        if not run_dir:
            raise ConfigError("--resume auto needs --run-dir: the run directory to continue")
        folder, target = Path(run_dir), "auto"
    else:
        path = Path(resume)
        checkpoint = parse_step(path.name) is not None and path.parent.name == CHECKPOINTS
        folder = path.parent.parent if checkpoint else path
        target = str(path) if checkpoint else True
        if not path.is_dir():
            raise ConfigError(
                f"--resume {resume} is not a directory; pass the run directory of an earlier "
                "`hone train`, or --resume auto with --run-dir"
            )
        if run_dir and Path(run_dir).resolve() != folder.resolve():
            raise ConfigError(
                f"--resume {resume} continues {folder} in place; drop --run-dir={run_dir}"
            )
    stored = None
    if RunFiles(folder).config.is_file() or RunFiles(folder).fold(0).config.is_file():
        stored = load_config(str(run_config_path(folder)))
    if source is None and stored is not None:
        cfg = resume_config(folder, overrides)
    else:
        cfg = load_config(source or default, overrides)
        if stored is not None:
            check_resumable_change(stored, cfg)
    return cfg, folder, target
