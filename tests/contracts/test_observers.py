"""Every built-in `Observer` subclass, in a tiny real Trainer run: each hook it overrides is
called by the loop (on_non_finite too: one step is made non-finite) and returns without
error, the run ends with every step done, and an observer with a `state_key` reloads its
`state_dict` (through safetensors + JSON, as a checkpoint stores it) to the same state.

Two runs cover them all. The trainer builds its own observers from the config (metrics log,
progress, status, MLflow, early stopping, statistics, NaN probe, checkpoint timer, profiler,
thread tuner), so the first run switches every one of them on. The others are handed to a
trainer by the code that owns them (federated rounds, lr finder, tuner); the second
run is given one of each, made as that code makes it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from torch import nn

from hone.checkpoint import flatten, unflatten
from hone.checkpoint.faults import INJECT_ENV
from hone.config import load_config
from hone.engine import Trainer
from hone.engine.observers import HOOKS, Observer

# The modules that define observers; a new one found elsewhere fails the first test.
MODULES = (
    "hone.engine.trainer",
    "hone.engine.mlflow_mirror",
    "hone.doctor.lr_find",
    "hone.tune.objective",
)
for module in MODULES:
    importlib.import_module(module)
# Observers of an optional extra: checked where it is installed, skipped elsewhere.
EXTRAS = {"MLflowMirror": "mlflow", "RoundLosses": "flwr"}
MISSING = {name for name, package in EXTRAS.items() if not importlib.util.find_spec(package)}

from hone.doctor.lr_find import LRSweep, SweepCurve  # noqa: E402
from hone.engine.threads import ThreadCount  # noqa: E402
from hone.tune.objective import PruningObserver  # noqa: E402

STEPS, BAD_ATTEMPT = 6, 4  # the 4th step attempted has a NaN loss: the guard skips it
QUIET = ["log.tensorboard=false", "log.progress=off", f"train.max_steps={STEPS}"]
QUIET += ["train.max_epochs=0", "train.eval_every=2", "log.every=2"]
# Every observer the trainer builds for itself, switched on.
BUILT_BY_THE_TRAINER = [
    "log.stats_every=2",  # TrainingStats
    "train.nan_guard=true",  # NanProbe
    "train.patience=10",  # EarlyStopping
    "train.checkpoint_every=3",  # CheckpointTimer
    "train.profile=true",  # Profiler
    "train.profile_wait=0",
    "train.profile_warmup=1",
    "train.profile_steps=2",
    "train.threads=auto",  # ThreadTuner, on a CPU with two threads or more
    *([] if "MLflowMirror" in MISSING else ["log.mlflow=true"]),  # MLflowMirror
]
# The observers their owners hand to a trainer, made as the owner makes them.
HANDED_IN: dict[type[Observer], Callable[[nn.Linear], Observer]] = {
    LRSweep: lambda model: LRSweep([1e-2] * (STEPS + 2), SweepCurve(skip_start=0)),
    PruningObserver: lambda model: PruningObserver(optuna.create_study().ask(), "val_loss"),
    ThreadCount: lambda model: ThreadCount(1),  # a fixed train.threads (a context, no hooks)
}
if "RoundLosses" not in MISSING:
    from hone.federate.client import RoundLosses

    HANDED_IN[RoundLosses] = lambda model: RoundLosses()  # a federated client's round


def builtin_observers() -> list[type[Observer]]:
    """Every Observer subclass hone defines (after importing MODULES)."""
    found, todo = [], list(Observer.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.startswith("hone."):
            found.append(cls)
    return sorted(set(found), key=lambda c: c.__name__)


ALL = builtin_observers()


def overridden(cls: type[Observer]) -> list[str]:
    return [hook for hook in HOOKS if getattr(cls, hook) is not getattr(Observer, hook)]


def count_calls(observer: Observer, calls: dict[str, int]) -> None:
    """Count each overridden hook's calls: the loop calls hooks on the instance."""
    for hook in overridden(type(observer)):
        method = getattr(observer, hook)

        def counted(*args: Any, _method: Any = method, _hook: str = hook) -> Any:
            calls[_hook] = calls.get(_hook, 0) + 1
            return _method(*args)

        setattr(observer, hook, counted)


def trainer(run_dir: Path, overrides: list[str], **kwargs: Any) -> Trainer:
    return Trainer(config=load_config("linreg", [*QUIET, *overrides]), run_dir=run_dir, **kwargs)


def fit_counting(t: Trainer) -> tuple[dict[str, Any], dict[type, Observer], dict[type, dict]]:
    """Fit `t` with every hone observer's hook calls counted, one count per class."""
    observers = {type(o): o for o in t.observers.all if type(o) in ALL}
    calls: dict[type, dict[str, int]] = {cls: {} for cls in observers}
    for cls, observer in observers.items():
        count_calls(observer, calls[cls])
    return t.fit(), observers, calls


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("observers")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(INJECT_ENV, f"nan_loss@{BAD_ATTEMPT}")
        # MLflow's file store: a new SQLite store spends about 10 s creating its tables.
        mp.setenv("MLFLOW_TRACKING_URI", f"file://{root / 'mlruns'}")
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        mp.chdir(root)
        torch.set_num_threads(2)  # the thread tuner needs two to choose from
        try:
            built = fit_counting(trainer(root / "built", BUILT_BY_THE_TRAINER))
        finally:
            torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = nn.Linear(5, 1)
        handed = [make(model) for make in HANDED_IN.values()]
        given = fit_counting(trainer(root / "handed", [], model=model, observers=handed))
        fresh = trainer(root / "fresh", BUILT_BY_THE_TRAINER)  # for the state reloads
        yield {"built": built, "handed": given, "fresh": fresh}
        fresh.close()


def run_of(cls: type[Observer], runs: dict[str, Any]) -> tuple[dict, Observer, dict[str, int]]:
    if cls.__name__ in MISSING:
        pytest.skip(f"{cls.__name__} needs {EXTRAS[cls.__name__]}, not installed")
    for name in ("built", "handed"):
        summary, observers, calls = runs[name]
        if cls in observers:
            return summary, observers[cls], calls[cls]
    raise AssertionError(f"{cls.__name__} is in neither run: add it to one of them")


def test_every_builtin_observer_is_in_a_run(runs) -> None:
    names = [cls.__name__ for cls in ALL]
    assert {"EarlyStopping", "LRSweep", "MLflowMirror", "ThreadTuner"} <= set(names)
    for cls in ALL:
        if cls.__name__ not in MISSING:
            run_of(cls, runs)


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_each_overridden_hook_is_called_and_the_run_finishes(cls, runs) -> None:
    summary, _, calls = run_of(cls, runs)
    assert summary["steps"] == STEPS
    assert set(calls) == set(overridden(cls)), cls  # on_non_finite too: one step was bad
    assert all(n >= 1 for n in calls.values())


@pytest.mark.parametrize(
    "cls", [c for c in ALL if c.state_key], ids=lambda cls: cls.__name__
)  # fmt: skip
def test_state_dict_reloads_to_the_same_state(cls, runs) -> None:
    _, observer, _ = run_of(cls, runs)
    tree, tensors = flatten({"state": observer.state_dict()})
    state = unflatten(json.loads(json.dumps(tree, allow_nan=False)), tensors)["state"]
    (fresh,) = [o for o in runs["fresh"].observers.all if type(o) is cls]
    assert fresh.state_dict() != observer.state_dict()  # the run changed it
    fresh.load_state_dict(state)
    assert fresh.state_dict() == observer.state_dict()
    assert observer.state_key in runs["fresh"].stateful()  # and a checkpoint holds it
