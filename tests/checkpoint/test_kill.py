"""Real signals to real `hone train` subprocesses: SIGKILL anywhere, SIGKILL inside a save,
SIGTERM and SIGINT. Each killed run is resumed and must end bit-identical to a run never
stopped (computed in this process with the same config, on one thread like the children).

The `hone train` processes are forks of a server that has imported torch (tests/forking.py),
started a few at a time.
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hone.cli import main
from hone.config import Config, to_toml
from hone.engine import Trainer
from hone.engine.cv import cross_validate
from hone.track.run import read_metrics
from tests import forking
from tests.checkpoint.helpers import (
    LINREG,
    MLP,
    checkpoint_steps,
    config,
    events,
    gpt,
    same_weights,
    train_steps,
    weights,
)

ROOT = Path(__file__).resolve().parents[2]
POLL_SECONDS = 0.005


def start(args: list[str], env: dict[str, str] | None = None) -> forking.Forked:
    """`hone train ARGS`, a real process (a fork of a server that has imported torch)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    logs = Path(tempfile.gettempdir()) / f"hone-test-logs-{os.getpid()}"
    return forking.Forked(["train", *args], Path.cwd(), full_env, logs)


def logged_steps(run_dir: Path) -> int:
    """Train events logged so far under run_dir (all folds), tolerating a half-written line."""
    count = 0
    for path in [run_dir / "metrics.jsonl", *run_dir.glob("fold-*/metrics.jsonl")]:
        if path.exists():
            count += path.read_bytes().count(b'"split": "train"')
    return count


def wait_until(proc: forking.Forked, condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited early ({proc.returncode}): {proc.stderr_text()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(POLL_SECONDS)


def write_config(cfg: Config, path: Path) -> str:
    path.write_text(to_toml(cfg))
    return str(path)


# ----------------------------------------------------------------- SIGKILL at random steps
def chains(tmp_path: Path) -> dict[str, tuple[list[str], int, int]]:
    """name -> (overrides, k-fold count, kills): together they cover the GPT, Muon, L-BFGS,
    AdamW, three schedules, gradient accumulation, early stopping and k-fold; 10 kills."""
    return {
        "gpt-muon-wsd-accum": (
            [
                *gpt(tmp_path),
                "optim.name=muon",
                "schedule.name=wsd",
                "train.grad_accum=2",
                "train.max_steps=60",
                "train.checkpoint_every=4",
                "log.every=3",  # the loss window straddles checkpoints
            ],
            0,
            4,
        ),
        "mlp-adamw-cosine-early-stopping": (
            [
                *MLP,
                "optim.name=adamw",
                "optim.lr=0.01",
                "schedule.name=cosine",
                "schedule.warmup_steps=5",
                "train.eval_every=5",
                "train.patience=3",
                "train.min_delta=0.002",
                "train.max_steps=300",
                "train.checkpoint_every=3",
            ],
            0,
            3,
        ),
        "kfold-lbfgs-every-step": (
            [*LINREG, "optim.name=lbfgs", "optim.lr=1", "optim.max_iter=4"]
            + ["schedule.name=step", "schedule.step_size=10"]
            + ["train.max_steps=30", "train.checkpoint_every=1"],
            2,
            3,
        ),
    }


def reference(cfg: Config, run_dir: Path, folds: int) -> None:
    if folds:
        cross_validate(cfg, run_dir, folds)
    else:
        Trainer(config=cfg, run_dir=run_dir).fit()


def run_dirs(run_dir: Path, folds: int) -> list[Path]:
    return [run_dir / f"fold-{i}" for i in range(folds)] if folds else [run_dir]


def kill_chain(cfg_file: str, run_dir: Path, folds: int, total: int, seeds: list[int]) -> None:
    """Start, SIGKILL once `run_dir` has logged a random number of train events (the
    uninterrupted run logs `total`); again, each time resuming with --resume auto."""
    cv = ["--cv", str(folds)] if folds else []
    # kill points spread over the first 80% of the run, one per seed, in order
    span = total * 0.8 / len(seeds)
    for i, seed in enumerate(seeds):
        target = int(span * i + random.Random(seed).uniform(0.2, 1.0) * span)
        args = [cfg_file, "--run-dir", str(run_dir), "--resume", "auto", *cv]
        proc = start(args)
        wait_until(proc, lambda target=target: logged_steps(run_dir) >= target)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow  # 10 processes in 3 chains: 76-86 s on 2 cores shared at load 5
def test_sigkill_at_random_steps_resumes_exactly(tmp_path) -> None:
    plans = chains(tmp_path)
    seeds = iter(range(100, 200))  # one seed per kill: where it lands
    jobs = []
    for name, (overrides, folds, kills) in plans.items():
        cfg = config(*overrides)
        reference(cfg, tmp_path / f"{name}-ref", folds)
        total = sum(len(events(d, "train")) for d in run_dirs(tmp_path / f"{name}-ref", folds))
        cfg_file = write_config(cfg, tmp_path / f"{name}.toml")
        jobs.append((name, folds, cfg_file, total, [next(seeds) for _ in range(kills)]))
    assert sum(len(job[-1]) for job in jobs) >= 10
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [
            pool.submit(kill_chain, cfg_file, tmp_path / name, folds, total, kill_seeds)
            for name, folds, cfg_file, total, kill_seeds in jobs
        ]
        for future in futures:
            future.result()
    for name, folds, *_ in jobs:
        # The last resume runs here, through the CLI's code path (saves a process start).
        cv = ["--cv", str(folds)] if folds else []
        assert main(["train", "--resume", str(tmp_path / name), *cv]) == 0, name
        for ref, got in zip(
            run_dirs(tmp_path / f"{name}-ref", folds), run_dirs(tmp_path / name, folds), strict=True
        ):
            assert same_weights(weights(ref), weights(got)), name
            assert events(ref, "train") == events(got, "train"), name  # each step once
            assert events(ref, "val") == events(got, "val"), name
            steps = train_steps(got)
            assert steps == sorted(set(steps)) and steps[-1] == train_steps(ref)[-1], name


# ----------------------------------------------------------------- SIGKILL inside a save
CRASH_RUN = [*LINREG, "optim.name=sgd", "train.max_steps=12", "train.checkpoint_every=3"]


def crash_in_save(point: str, cfg_file: str, run_dir: Path) -> int:
    env = {"HONE_CHECKPOINT_CRASH": f"{point}@6"}
    proc = start([cfg_file, "--run-dir", str(run_dir)], env)
    return proc.wait(timeout=120)


@pytest.mark.slow  # 3 processes: 18-30 s on 2 cores shared at load 5
def test_sigkill_inside_a_save_keeps_the_newest_complete_checkpoint(tmp_path) -> None:
    cfg = config(*CRASH_RUN)
    Trainer(config=cfg, run_dir=tmp_path / "ref").fit()
    cfg_file = write_config(cfg, tmp_path / "run.toml")
    points = {"between_files": 3, "before_rename": 3, "after_rename": 6}
    with ThreadPoolExecutor(max_workers=3) as pool:
        codes = list(pool.map(lambda p: crash_in_save(p, cfg_file, tmp_path / p), points))
    assert codes == [-signal.SIGKILL] * 3
    for point, newest in points.items():
        folder = tmp_path / point / "checkpoints"
        partial = sorted(p.name for p in folder.glob(".tmp-*"))
        assert partial == ([] if point == "after_rename" else [".tmp-step-0000006"]), point
        trainer = Trainer(config=cfg, run_dir=tmp_path / point, resume=True)
        assert trainer.state.step == newest, point
        assert not list(folder.glob(".tmp-*"))  # cleaned at start
        trainer.fit()
        assert same_weights(weights(tmp_path / "ref"), weights(tmp_path / point)), point
        assert train_steps(tmp_path / point) == list(range(1, 13)), point


# ----------------------------------------------------------------- SIGTERM and SIGINT
def stop_with(signum: int, cfg_file: str, run_dir: Path) -> tuple[int, float]:
    proc = start([cfg_file, "--run-dir", str(run_dir)])
    wait_until(proc, lambda: logged_steps(run_dir) >= 30)
    sent = time.monotonic()
    proc.send_signal(signum)
    code = proc.wait(timeout=30)
    return code, time.monotonic() - sent


@pytest.mark.slow  # 2 processes: 15-24 s on 2 cores shared at load 5
def test_sigterm_and_sigint_checkpoint_and_exit(tmp_path) -> None:
    overrides = [*MLP, "optim.name=adamw", "train.max_steps=300", "train.checkpoint_every=0"]
    cfg = config(*overrides)
    Trainer(config=cfg, run_dir=tmp_path / "ref").fit()
    cfg_file = write_config(cfg, tmp_path / "run.toml")
    signals = {"term": signal.SIGTERM, "int": signal.SIGINT}
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(
            zip(
                signals,
                pool.map(lambda kv: stop_with(kv[1], cfg_file, tmp_path / kv[0]), signals.items()),
                strict=True,
            )
        )
    assert results["term"][0] == 0 and results["int"][0] == 130
    for name in signals:
        run_dir = tmp_path / name
        assert results[name][1] < 30
        stopped = train_steps(run_dir)[-1]
        assert 30 <= stopped < 300 and checkpoint_steps(run_dir) == [stopped]
        assert not (run_dir / "summary.json").exists()  # stopped, not finished
        Trainer(config=cfg, run_dir=run_dir, resume=True).fit()
        assert same_weights(weights(tmp_path / "ref"), weights(run_dir)), name
        assert events(tmp_path / "ref", "train") == events(run_dir, "train"), name
        assert len([e for e in read_metrics(run_dir) if e["split"] == "test"]) == 1
