"""`hone train --nproc N`: start the worker processes through torchrun's elastic agent.

hone has no launcher of its own: the workers are started, watched and (with `--max-restarts`)
restarted by `torch.distributed.launcher.elastic_launch`, the engine behind `torchrun`, called
with a `LaunchConfig` built from hone's flags. Each worker runs `python -m hone train` with the
user's arguments minus the launch flags, and reads its rank from the environment torchrun
sets (hone.distributed.context). The launcher decides the run directory before it starts
anything, so that every rank (and every restart) writes to the same one.

Rendezvous is c10d: one node (`--node-rank 0`) hosts a TCP store at `--rdzv-endpoint`, the
others join it; ranks are assigned by the rendezvous. A single machine uses a free local port.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hone.config import Config
from hone.distributed.context import DistContext
from hone.distributed.strategy import threads_per_process
from hone.errors import ConfigError

if TYPE_CHECKING:  # torch.distributed.launcher is imported only when launching
    from torch.distributed.launcher.api import LaunchConfig


@dataclass(frozen=True)
class LaunchPlan:
    """Where and how many workers run; the hone-flag view of torchrun's LaunchConfig."""

    nproc: int
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str = ""
    max_restarts: int = 0
    run_id: str = ""

    def check(self) -> None:
        if self.nproc < 1:
            raise ConfigError(f"--nproc must be at least 1, got {self.nproc}")
        if self.nnodes < 1:
            raise ConfigError(f"--nnodes must be at least 1, got {self.nnodes}")
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(
                f"--node-rank must be in [0, {self.nnodes}), got {self.node_rank}; "
                "give each machine its own rank, 0 on the one at --rdzv-endpoint"
            )
        if self.max_restarts < 0:
            raise ConfigError(f"--max-restarts must be at least 0, got {self.max_restarts}")
        if self.nnodes > 1 and ":" not in self.rdzv_endpoint:
            raise ConfigError(
                f"--rdzv-endpoint must be HOST:PORT for --nnodes {self.nnodes}, got "
                f"{self.rdzv_endpoint!r}; set --rdzv-endpoint=<node 0's address>:29500"
            )


def launch_config(plan: LaunchPlan) -> LaunchConfig:
    """torchrun's LaunchConfig for `plan`."""
    from torch.distributed.launcher.api import LaunchConfig

    plan.check()
    single = plan.nnodes == 1 and not plan.rdzv_endpoint
    return LaunchConfig(
        min_nodes=plan.nnodes,
        max_nodes=plan.nnodes,
        nproc_per_node=plan.nproc,
        run_id=plan.run_id or uuid.uuid4().hex,
        rdzv_backend="c10d",
        # Port 0: the store binds a free port, as `torchrun --standalone` does.
        rdzv_endpoint="localhost:0" if single else plan.rdzv_endpoint,
        # Node 0 hosts the store; saying so (rather than matching host names) also lets
        # several "nodes" share one machine, as the tests do.
        rdzv_configs={"is_host": single or plan.node_rank == 0},
        max_restarts=plan.max_restarts,
        monitor_interval=0.1,
        start_method="spawn",
    )


def run_workers(plan: LaunchPlan, worker_args: Sequence[str]) -> int:
    """Run `python WORKER_ARGS` as `plan.nproc` workers on this node; returns an exit code.

    On the CPU each worker gets cores // nproc threads (unless OMP_NUM_THREADS is set). A
    failed worker ends the group (or restarts it, `plan.max_restarts` times); the code
    returned is the first failed worker's exit code, 1 when it died of a signal.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    config = launch_config(plan)
    # Workers inherit this process's environment; the launcher itself only waits.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(plan.nproc)))
    # Each attempt's workers get a store of their own. The agent's shared rendezvous store
    # keeps the previous attempt's keys, so a restarted group read a dead rank's address and
    # failed to connect (pytorch/pytorch#135712; seen with gloo on torch 2.13).
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    try:
        elastic_launch(config, sys.executable)("-u", *worker_args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        cause = (
            f"signal {-failure.exitcode}" if failure.exitcode < 0 else f"exit {failure.exitcode}"
        )
        print(f"hone: error: worker rank {rank} failed ({cause})", file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


def worker_argv(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """`-m hone train ...` for a worker: the user's arguments minus the launch flags."""
    argv = ["-m", "hone", "train"]
    if args.config:
        argv.append(args.config)
    argv += ["--run-dir", str(run_dir)]
    # With restarts every attempt continues from the run's newest checkpoint (none yet on
    # the first attempt of a new run), so a restarted group resumes by itself.
    resume = "auto" if args.max_restarts else args.resume
    if resume:
        argv += ["--resume", str(resume)]
    argv += [f"--{override}" for override in args.overrides]
    return argv


def launch(args: argparse.Namespace, cfg: Config) -> int:
    """`hone train CONFIG --nproc N [--nnodes M ...]`: start the workers, wait, report."""
    from hone.run_files import default_run_dir

    # Only torchrun's variables count: under `srun` one launcher per node is the normal case.
    if "RANK" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ:
        raise ConfigError(
            "--nproc/--nnodes start workers, but this process already is one (under "
            "torchrun); drop --nproc and --nnodes, the launcher's environment gives the ranks"
        )
    if args.cv:
        raise ConfigError(
            f"--cv runs its folds in one process, got --nproc {args.nproc}; drop --nproc"
        )
    if args.nnodes > 1 and not args.run_dir:
        raise ConfigError(
            "--nnodes > 1 needs --run-dir (on a shared file system) so that every machine "
            "writes the same run; set --run-dir=runs/NAME"
        )
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg.recipe)
    plan = LaunchPlan(
        nproc=args.nproc,
        nnodes=args.nnodes,
        node_rank=args.node_rank,
        rdzv_endpoint=args.rdzv_endpoint,
        max_restarts=args.max_restarts,
        # Every machine must name the same rendezvous: derive it from the shared run directory.
        run_id="hone-" + hashlib.sha256(str(run_dir).encode()).hexdigest()[:16]
        if args.nnodes > 1
        else "",
    )
    return run_workers(plan, worker_argv(args, run_dir))


def external_run_dir(recipe: str) -> Path | None:
    """Under an external torchrun or srun: a run directory every rank derives alike.

    Ranks cannot each take a fresh timestamp (they would differ by a second), so the
    launcher's job id names the run; None outside a multi-process run.
    """
    if not DistContext.from_env().distributed:
        return None
    job = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if job in ("", "none"):
        job = os.environ.get("SLURM_JOB_ID", "")
    if not job:
        raise ConfigError(
            "every process of a multi-process run must write the same run directory, and this "
            "launcher gives no job id to name it; set --run-dir=runs/NAME"
        )
    return Path("runs") / f"{recipe or 'run'}-{job}"
