"""A tuning run: create or resume the study, run its workers, then write best.toml and plots.

Every worker (this process when `workers == 1`, else `workers` child processes) runs the same
loop against the shared storage until the study has `trials` finished (complete or pruned)
trials in all, so running the command again resumes it, and many machines can each run it
against one PostgreSQL database. A trial whose worker died stops sending heartbeats; the next
worker to look fails it and Optuna re-queues it (at most `tune.max_retry` times).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from hone.config.step_bound import bound_count
from hone.errors import ConfigError, UserError
from hone.metrics import metric_of
from hone.tune.configs import TrialConfigs
from hone.tune.leaderboard import FINISHED, Monitor
from hone.tune.objective import Objective
from hone.tune.pruners import build_pruner, resolve_pruner_name
from hone.tune.samplers import SAMPLERS, SamplerContext, build_sampler
from hone.tune.space import SearchSpace
from hone.tune.storage import default_storage_url, open_storage

_DIRECTIONS = {"min": "minimize", "minimize": "minimize", "max": "maximize", "maximize": "maximize"}


class TuningIncomplete(UserError):
    """The workers stopped before the study had its trials; running again resumes it."""

    exit_code = 1


@dataclass
class TuneOptions:
    """What `hone tune` is asked: the config and how to run the study (not what to search)."""

    config: str  # recipe name or TOML file, with a [tune] table
    overrides: list[str] = field(default_factory=list)  # "a.b=value", applied to every trial
    trials: int = 20  # finished (complete or pruned) trials the study should have in all
    timeout: float = 0.0  # seconds after which a worker starts no new trial (0: none)
    workers: int = 1  # worker processes on this machine
    storage: str = ""  # database URL ("": SQLite file in the tuning directory)
    study: str = ""  # study name ("": the recipe's name)
    directory: str = ""  # tuning directory ("": tune/<study>)
    cv: int = 0  # k-fold cross-validation as the objective (0: the validation split)


@dataclass
class TuneResult:
    """What a finished tuning run produced."""

    study: str
    storage: str
    directory: Path
    metrics: list[str]
    best: list[FrozenTrial]  # the best trial, or the Pareto front for several metrics
    best_config: Path | None
    report_skipped: dict[str, str]
    counts: dict[str, int]


def _directions(metrics: list[str], text: str) -> list[str]:
    names = [d.strip() for d in text.split(",")]
    if names == ["auto"]:
        names = ["auto"] * len(metrics)
    if len(names) == 1 and len(metrics) > 1:
        names = names * len(metrics)
    if len(names) != len(metrics):
        raise ConfigError(
            f"tune.direction must give one direction per metric ({len(metrics)}), got {text!r}; "
            "set --direction=minimize,maximize"
        )
    out = []
    for metric, name in zip(metrics, names, strict=True):
        if name == "auto":
            # A metric's own direction (hone.metrics); other numbers (num_parameters, ...) are costs.
            known = metric_of(metric)
            out.append("maximize" if known and known.direction == "max" else "minimize")
        elif name in _DIRECTIONS:
            out.append(_DIRECTIONS[name])
        else:
            raise ConfigError(
                f"tune.direction must be minimize, maximize or auto, got {name!r}; set --direction=min"
            )
    return out


class Tuning:
    """One study as the options and the config describe it; shared by parent and workers."""

    def __init__(self, options: TuneOptions) -> None:
        if options.trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {options.trials}")
        if options.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {options.workers}")
        if options.timeout < 0:
            raise ConfigError(f"--timeout must be at least 0 seconds, got {options.timeout}")
        if options.cv == 1 or options.cv < 0:
            raise ConfigError(f"--cv must be 0 (off) or at least 2 folds, got {options.cv}")
        self.options = options
        self.configs = TrialConfigs(options.config, options.overrides)
        cfg = self.tune_cfg = self.configs.base.tune
        self.metrics = [m.strip() for m in cfg.metric.split(",") if m.strip()]
        if not self.metrics:
            raise ConfigError("tune.metric must name a metric, got ''; set --metric=val_loss")
        self.directions = _directions(self.metrics, cfg.direction)
        if not cfg.space:
            raise ConfigError(
                "tune.space is empty: nothing to tune; add entries such as "
                '"optim.lr" = {type = "float", low = 1e-4, high = 1e-1, log = true} under [tune.space], '
                'or build on a recipe, whose default space is then used (base = "mlp-digits")'
            )
        self.space = SearchSpace.parse(cfg.space)
        self.configs.check(self.space)
        SAMPLERS.get(cfg.sampler)
        resolve_pruner_name(cfg, len(self.metrics))
        if options.cv and cfg.pruner not in ("auto", "none"):
            raise ConfigError(
                "--cv gives one value per trial, so nothing can be pruned; set --pruner=none"
            )
        self.report = len(self.metrics) == 1 and not options.cv
        self.limit = bound_count(options.trials)  # $HONE_MAX_STEPS: tests of the docs
        if cfg.sampler == "grid":
            self.limit = min(self.limit, math.prod(len(v) for v in self.space.grid().values()))
        self.study_name = options.study or self.configs.base.recipe or "study"
        self.directory = Path(options.directory or Path("tune") / self.study_name).resolve()
        self.url = options.storage or default_storage_url(self.directory)

    # ----------------------------------------------------------------- the study
    def create_study(self) -> optuna.Study:
        """Create the study, or load it to resume; its directions must not change."""
        storage = open_storage(self.url, self.tune_cfg, heartbeat=False)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            directions=[optuna.study.StudyDirection[d.upper()] for d in self.directions],
            load_if_exists=True,
        )
        wanted = [optuna.study.StudyDirection[d.upper()] for d in self.directions]
        if study.directions != wanted:
            have = ",".join(d.name.lower() for d in study.directions)
            raise ConfigError(
                f"study {self.study_name!r} in {self.url} optimizes {have}, got "
                f"{','.join(self.directions)}; pass --study NEW_NAME or the study's --metric/--direction"
            )
        known = study.user_attrs.get("metrics")
        if known and known != self.metrics:
            raise ConfigError(
                f"study {self.study_name!r} optimizes {','.join(known)}, got "
                f"{','.join(self.metrics)}; pass --study NEW_NAME or --metric={','.join(known)}"
            )
        study.set_user_attr("metrics", self.metrics)
        return study

    def load_study(self, worker: int = 0, monitor: bool = False) -> optuna.Study:
        """The study as worker `worker` sees it: its own sampler seed, heartbeats on."""
        storage = open_storage(self.url, self.tune_cfg, heartbeat=not monitor)
        ctx = SamplerContext(
            self.space, len(self.metrics), self.tune_cfg.seed + worker, self.options.workers > 1
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.load_study(
                study_name=self.study_name,
                storage=storage,
                sampler=build_sampler(self.tune_cfg, ctx),
                pruner=build_pruner(self.tune_cfg, len(self.metrics)),
            )

    # ----------------------------------------------------------------- a worker
    def work(self, worker: int = 0) -> None:
        """Run trials until the study has `limit` finished ones (or the timeout passes)."""
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # the monitor prints each trial
        study = self.load_study(worker)
        objective = Objective(
            self.configs, self.space, self.directory, self.metrics, self.report, self.options.cv
        )
        start = time.monotonic()
        timeout = self.options.timeout
        while not (timeout and time.monotonic() - start >= timeout):
            trials = study.get_trials(deepcopy=False)
            finished = sum(t.state in FINISHED for t in trials)
            if finished >= self.limit:
                return
            _check_failures(trials, self.limit)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if finished + running >= self.limit:
                # The last trials are running elsewhere; wait, and take over any whose worker
                # died (its heartbeat stops; failing it re-queues a retry for us to pick up).
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
                time.sleep(min(1.0, self.tune_cfg.heartbeat_seconds))
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                _run_one(study, objective)
            if objective.config_error is not None:
                raise objective.config_error

    # ----------------------------------------------------------------- the end
    def finish(self, study: optuna.Study) -> TuneResult:
        """best.toml (and pareto.json), the report folder; the result to print."""
        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best: list[FrozenTrial] = []
        best_config = None
        if complete:
            best = study.best_trials if len(self.metrics) > 1 else [study.best_trial]
            sign = 1.0 if self.directions[0] == "minimize" else -1.0
            best.sort(key=lambda t: sign * t.values[0])
            best_config = self.directory / "best.toml"
            self._write_config(best[0], best_config)
            if len(self.metrics) > 1:
                self._write_pareto(best)
        skipped: dict[str, str] = {}
        if self.tune_cfg.report:
            from hone.tune.plots import write_plots

            skipped = write_plots(study, self.directory / "report", self.metrics)
        return TuneResult(
            self.study_name,
            self.url,
            self.directory,
            self.metrics,
            best,
            best_config,
            skipped,
            counts,
        )

    def _write_config(self, trial: FrozenTrial, path: Path) -> None:
        values = ", ".join(
            f"{m} = {v:.6g}" for m, v in zip(self.metrics, trial.values, strict=True)
        )
        header = (
            f"# best trial {trial.number} of study {self.study_name!r}: {values}\n"
            f"# reproduce it with: hone train {path.name}\n"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + self.configs.toml(self.space.decode(trial.params)))

    def _write_pareto(self, front: list[FrozenTrial]) -> None:
        rows = []
        for t in front:
            path = self.directory / "pareto" / f"trial-{t.number}.toml"
            self._write_config(t, path)
            rows.append(
                {
                    "trial": t.number,
                    "values": dict(zip(self.metrics, t.values, strict=True)),
                    "params": self.space.decode(t.params),
                    "config": str(path),
                }
            )
        (self.directory / "pareto.json").write_text(json.dumps(rows, indent=2) + "\n")


def _check_failures(trials: list[FrozenTrial], limit: int) -> None:
    """Trials that fail by themselves (not a dead worker's) are resampled, but not forever."""
    failed = [t for t in trials if t.state == TrialState.FAIL and "error" in t.user_attrs]
    if len(failed) >= max(limit, 3):
        last = failed[-1]
        raise TuningIncomplete(
            f"{len(failed)} trials failed, the last with {last.user_attrs['error']} "
            f"(see {last.user_attrs.get('run_dir', 'its run directory')}); fix the config or narrow tune.space"
        )


def _run_one(study: optuna.Study, objective: Objective) -> None:
    """One trial through study.optimize, which runs its heartbeat and fails stale trials."""
    try:
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)
    except (optuna.exceptions.UpdateFinishedTrialError, AssertionError) as e:
        # Another worker took this trial for dead (no heartbeat within the grace period, e.g.
        # the machine was suspended) and failed it; its retry runs as a new trial. Optuna
        # reports this from its own `finally` as an AssertionError whose context says so.
        if not isinstance(e, optuna.exceptions.UpdateFinishedTrialError) and not isinstance(
            e.__context__, optuna.exceptions.UpdateFinishedTrialError
        ):
            raise


# --------------------------------------------------------------------- processes
def _worker_env(workers: int) -> dict[str, str]:
    import hone

    env = dict(os.environ)
    root = str(Path(hone.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    # Workers share the cores: W workers each with every core's threads would thrash.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    return env


def _spawn_workers(tuning: Tuning, workers: int) -> None:
    options = tuning.options
    logs = tuning.directory / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    spec = json.dumps(dataclasses.asdict(options))
    env = _worker_env(workers)
    procs = []
    for i in range(workers):
        with open(logs / f"worker-{i}.log", "ab") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "hone.tune.worker", spec, str(i)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
    try:
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    for i, code in enumerate(codes):
        if code == ConfigError.exit_code:
            raise ConfigError(_last_line(logs / f"worker-{i}.log").removeprefix("hone: error: "))
    for i, code in ((i, c) for i, c in enumerate(codes) if c != 0):
        path = logs / f"worker-{i}.log"
        warnings.warn(
            f"hone tune: worker {i} exited with code {code}: {_last_line(path)} (see {path})",
            stacklevel=2,
        )


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else f"a worker failed; see {path}"


def run_worker(options: TuneOptions, worker: int) -> None:
    """The body of one worker process (`python -m hone.tune.worker`)."""
    Tuning(options).work(worker)


def tune(options: TuneOptions) -> TuneResult:
    """Run (or resume) the study `options` describe; return what it found."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our monitor reports each trial
    tuning = Tuning(options)
    study = tuning.create_study()
    tuning.directory.mkdir(parents=True, exist_ok=True)
    # No more workers than trials left to run: the others would only start and wait.
    done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    workers = max(1, min(options.workers, tuning.limit - done))
    with Monitor(lambda: tuning.load_study(monitor=True), tuning.limit):
        if workers == 1:
            tuning.work(0)
        else:
            _spawn_workers(tuning, workers)
    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in FINISHED for t in trials)
    result = tuning.finish(study)
    if finished < tuning.limit and not options.timeout:
        raise TuningIncomplete(
            f"study {tuning.study_name!r} has {finished} of {tuning.limit} finished trials after "
            "a worker stopped; run the same command again to continue it"
        )
    return result
