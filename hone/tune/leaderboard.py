"""The table of trials: live while a study runs, and as `hone tune show`'s leaderboard.

While tuning, a thread polls the storage once a second: on a terminal it redraws a rich table
on stderr; otherwise it prints one line per trial as it finishes (logs stay readable).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from hone.errors import ConfigError
from hone.tune.settings import TuneConfig
from hone.tune.storage import default_storage_url, open_storage

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def duration_seconds(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None:
        return None
    end = trial.datetime_complete or datetime.now()
    return (end - trial.datetime_start).total_seconds()


def format_params(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def format_values(trial: FrozenTrial) -> str:
    if trial.state != TrialState.COMPLETE and trial.intermediate_values:
        step = max(trial.intermediate_values)
        return f"{trial.intermediate_values[step]:.6g} at step {step}"
    if trial.values is not None:
        return ", ".join(f"{v:.6g}" for v in trial.values)
    return str(trial.user_attrs.get("error", ""))[:60]


def trial_line(trial: FrozenTrial) -> str:
    """One finished trial as one line, for logs."""
    seconds = duration_seconds(trial)
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    return (
        f"trial {trial.number} {trial.state.name.lower()} {format_values(trial)}{took}: "
        f"{format_params(trial.params)}"
    ).replace("  ", " ")


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials best first (by the first metric), then the rest by number."""
    trials = study.get_trials(deepcopy=False)
    sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1.0
    complete = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.values is not None),
        key=lambda t: sign * t.values[0],
    )
    rest = [t for t in trials if t.state != TrialState.COMPLETE or t.values is None]
    return complete + rest


def table(study: optuna.Study, trials: Sequence[FrozenTrial], title: str = "") -> Any:
    """A rich Table of `trials`."""
    from rich.table import Table

    metrics = study.user_attrs.get("metrics") or ["value"] * len(study.directions)
    out = Table(title=title or f"study {study.study_name}", title_justify="left")
    out.add_column("trial", justify="right")
    out.add_column("state")
    out.add_column(", ".join(metrics), justify="right")
    out.add_column("seconds", justify="right")
    out.add_column("parameters")
    for t in trials:
        seconds = duration_seconds(t)
        out.add_row(
            str(t.number),
            t.state.name.lower(),
            format_values(t),
            f"{seconds:.1f}" if seconds is not None else "",
            format_params(t.params),
        )
    return out


class Monitor:
    """Shows a study's trials while workers run it (a thread; use as a context manager)."""

    def __init__(
        self,
        load: Callable[[], optuna.Study],
        total: int,
        stream: TextIO | None = None,
        interval: float = 1.0,
    ) -> None:
        self.load, self.total, self.interval = load, total, interval
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hone-tune-monitor", daemon=True)
        self._display: Any = None

    def __enter__(self) -> Monitor:
        self.study = self.load()
        # Trials finished before this command (a resumed study) are not printed again.
        self._seen = {t.number for t in self.study.get_trials(deepcopy=False, states=FINISHED)}
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._display = Live(console=Console(file=self.stream), auto_refresh=False)
            self._display.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()
        if self._display is not None:
            self._display.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._poll()
            except Exception:  # a busy database: the next poll shows it
                continue

    def _poll(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        if self._display is not None:
            done = sum(t.state in FINISHED for t in trials)
            recent = [t for t in trials if t.state != TrialState.WAITING][-20:]
            title = f"study {self.study.study_name}: {done}/{self.total} trials finished"
            self._display.update(table(self.study, recent, title), refresh=True)
            return
        for t in trials:
            if t.state.is_finished() and t.number not in self._seen:
                self._seen.add(t.number)
                print(trial_line(t), file=self.stream, flush=True)


def show(study_name: str, storage: str = "", directory: str = "") -> tuple[optuna.Study, list[Any]]:
    """An existing study and its trials ranked best first, for `hone tune show`."""
    url = storage or default_storage_url(Path(directory or Path("tune") / study_name))
    if url.startswith("sqlite") and not Path(url.split("///", 1)[1]).exists():
        raise ConfigError(
            f"no study database at {url.split('///', 1)[1]}; pass --storage URL or --dir DIR of the tuning run"
        )
    try:
        study = optuna.load_study(
            study_name=study_name, storage=open_storage(url, TuneConfig(), heartbeat=False)
        )
    except KeyError:
        names = optuna.get_all_study_names(storage=open_storage(url, TuneConfig(), heartbeat=False))
        raise ConfigError(
            f"no study named {study_name!r} in {url}; the studies there: {', '.join(names) or 'none'}"
        ) from None
    return study, ranked(study)
