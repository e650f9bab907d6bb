"""The launcher, the environment and the strategy checks, without starting any process."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hone.cli import main
from hone.config import load_config
from hone.distributed.context import DistContext
from hone.distributed.launch import LaunchPlan, external_run_dir, launch_config, worker_argv
from hone.distributed.strategy import build_strategy, check_supported, threads_per_process
from hone.errors import ConfigError

LAUNCHER_ENV = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "SLURM_NNODES",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_JOB_ID",
    "MASTER_ADDR",
    "TORCHELASTIC_RUN_ID",
]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean launcher environment, restored after the test."""
    for var in LAUNCHER_ENV:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_single_process_by_default(env: pytest.MonkeyPatch) -> None:
    ctx = DistContext.from_env()
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)


def test_torchrun_environment(env: pytest.MonkeyPatch) -> None:
    for var, value in [("RANK", 5), ("WORLD_SIZE", 8), ("LOCAL_RANK", 1), ("LOCAL_WORLD_SIZE", 4)]:
        env.setenv(var, str(value))
    assert DistContext.from_env() == DistContext(5, 8, 1, 4)
    assert not DistContext.from_env().is_main


def test_slurm_environment(env: pytest.MonkeyPatch) -> None:
    values = {
        "SLURM_PROCID": "6",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "2",
        "SLURM_NNODES": "2",
        "MASTER_ADDR": "node-a",
    }
    for var, value in values.items():
        env.setenv(var, value)
    assert DistContext.from_env() == DistContext(6, 8, 2, 4)
    env.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    assert DistContext.from_env().local_world_size == 4


def test_threads_share_the_cores() -> None:
    cores = threads_per_process(1)
    assert threads_per_process(2) == max(1, cores // 2)
    assert threads_per_process(10_000) == 1


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (LaunchPlan(nproc=0), "--nproc must be at least 1"),
        (LaunchPlan(nproc=2, nnodes=2, node_rank=2, rdzv_endpoint="h:1"), "--node-rank"),
        (LaunchPlan(nproc=2, nnodes=2), "--rdzv-endpoint must be HOST:PORT"),
        (LaunchPlan(nproc=2, max_restarts=-1), "--max-restarts"),
    ],
)
def test_bad_launch_flags(plan: LaunchPlan, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan.check()


def test_launch_config_one_machine() -> None:
    config = launch_config(LaunchPlan(nproc=4, max_restarts=2))
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (1, 1, 4)
    assert config.rdzv_backend == "c10d" and config.rdzv_endpoint == "localhost:0"
    assert config.rdzv_configs["is_host"] and config.max_restarts == 2


def test_launch_config_several_machines() -> None:
    plan = LaunchPlan(nproc=8, nnodes=4, node_rank=1, rdzv_endpoint="node-a:29500", run_id="r")
    config = launch_config(plan)
    assert (config.min_nodes, config.max_nodes, config.run_id) == (4, 4, "r")
    assert config.rdzv_endpoint == "node-a:29500"
    assert config.rdzv_configs["is_host"] is False  # node 0 hosts the rendezvous store
    assert launch_config(LaunchPlan(8, 4, 0, "node-a:29500")).rdzv_configs["is_host"] is True


def _args(**kwargs: object) -> argparse.Namespace:
    defaults = {"config": "mlp-digits", "resume": None, "max_restarts": 0, "overrides": []}
    return argparse.Namespace(**{**defaults, **kwargs})


def test_worker_argv_drops_launch_flags() -> None:
    argv = worker_argv(_args(overrides=["train.max_steps=5"]), Path("runs/x"))
    assert argv == ["-m", "hone", "train", "mlp-digits", "--run-dir", "runs/x"] + [
        "--train.max_steps=5"
    ]


def test_restarted_workers_resume_by_themselves() -> None:
    assert worker_argv(_args(max_restarts=1), Path("r"))[-2:] == ["--resume", "auto"]
    assert worker_argv(_args(resume="r", max_restarts=1), Path("r"))[-2:] == ["--resume", "auto"]
    assert worker_argv(_args(resume="old-run"), Path("r"))[-2:] == ["--resume", "old-run"]


def test_run_directory_under_an_external_launcher(env: pytest.MonkeyPatch) -> None:
    assert external_run_dir("gpt") is None  # one process: the caller picks a fresh name
    env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="--run-dir"):
        external_run_dir("gpt")
    env.setenv("SLURM_JOB_ID", "4242")
    assert external_run_dir("gpt") == Path("runs/gpt-4242")
    env.setenv("TORCHELASTIC_RUN_ID", "abc")  # torchrun's id wins: it survives restarts
    assert external_run_dir("gpt") == Path("runs/gpt-abc")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.name=lbfgs", "optim.lr=1"], "closure"),
        (["optim.name=muon", "dist.strategy=fsdp"], "muon"),
        (["reg.l2=0.1", "dist.strategy=fsdp"], "reg.l1/reg.l2 must be 0"),
    ],
)
def test_unsupported_multi_process_settings(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_supported(load_config("mlp-digits", overrides))


def test_single_process_has_no_strategy(env: pytest.MonkeyPatch) -> None:
    cfg = load_config("mlp-digits", ["dist.strategy=fsdp"])
    assert build_strategy(cfg, DistContext(), torch.device("cpu")) is None


def test_missing_rendezvous_address_is_a_user_error(env: pytest.MonkeyPatch) -> None:
    env.delenv("MASTER_PORT", raising=False)
    cfg = load_config("mlp-digits")
    with pytest.raises(ConfigError, match="MASTER_ADDR must be set"):
        build_strategy(cfg, DistContext(0, 2, 0, 2), torch.device("cpu"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nproc", "2", "--cv", "3"], "--cv runs its folds in one process"),
        (["--nnodes", "2", "--rdzv-endpoint", "h:1"], "--nnodes > 1 needs --run-dir"),
    ],
)
def test_cli_refuses_bad_combinations(
    argv: list[str], message: str, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "mlp-digits", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_nested_launch(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("RANK", "0")
    assert main(["train", "mlp-digits", "--nproc", "2"]) == 2
    assert "already is one" in capsys.readouterr().err


def test_a_process_that_left_its_group_ends_as_the_interpreter_would(tmp_path: Path) -> None:
    """end_process (what `python -m hone` does once a run left its process group): the
    other threads joined and the atexit handlers run, output flushed, the exit code kept."""
    script = tmp_path / "end.py"
    script.write_text(
        "import atexit, sys, threading, time\n"
        "from hone.distributed.strategy import end_process\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread ran'))).start()\n"
        "sys.stdout.write('unflushed')\n"
        "end_process(3)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == ["unflushedthread ran", "atexit ran"]
