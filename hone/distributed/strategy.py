"""Multi-process strategies: join the process group, wrap the model, reduce what is logged.

`build_strategy` returns None when the run has a single process, so a single-process run pays
nothing: no wrapper around the model, no collective, no process group. With several
processes it joins the group (NCCL on CUDA, gloo on the CPU) with `dist.timeout_seconds` as
the collective timeout, so a dead or stuck rank makes every other rank fail within that time
instead of hanging, and returns the `dist.strategy` implementation (ddp.py, fsdp.py).

Evaluation: a language model's validation windows are shared out like a training batch (each
rank evaluates its slices, in training-sized micro-batches, and the losses are averaged: equal
token counts make the mean of the means exact), since a large model's evaluation is costly and
a whole batch on one device may not fit. In-memory data sets are small: every rank evaluates
the whole split (exact, no reduction) and the metrics are broadcast from rank 0, so that no
floating-point difference between devices can ever split the decisions that follow from them
(early stopping, the best value).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch
import torch.distributed as dist
from torch import nn

from hone.config import Config, DistConfig
from hone.distributed.context import DistContext
from hone.errors import ConfigError
from hone.registry import Registry

if TYPE_CHECKING:
    from hone.checkpoint import StateIO

# True while a process group that hone created is open; `Strategy.close` destroys only that
# one, never a group the user's own code created before building a Trainer.
_GROUP_OWNED = False
# This process left a group it had joined (Strategy.close): see `end_process`.
_LEFT_GROUP = False


class Strategy:
    """How several processes train one model; implementations register under dist.strategy."""

    def __init__(self, cfg: DistConfig, ctx: DistContext, device: torch.device) -> None:
        self.cfg, self.ctx, self.device = cfg, ctx, device

    def wrap(self, model: nn.Module) -> nn.Module:
        """Make `model` train across processes; returns the module to call in training steps.

        Called before the optimizer is built: FSDP replaces the parameters with shards.
        """
        raise NotImplementedError

    def no_sync(self, module: nn.Module) -> AbstractContextManager[None]:
        """Context for the micro-steps before the last: accumulate gradients without
        communicating, where the strategy can afford to (DDP; FSDP reduces every micro-step)."""
        raise NotImplementedError

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The whole model's tensors on rank 0 ({} elsewhere); every rank must call it."""
        raise NotImplementedError

    def checkpoint_io(self, frozen_base: dict[str, Any] | None = None) -> StateIO:
        """How checkpoints save and load model and optimizer state: every rank its own shards
        (DCP), loadable at any world size; the trainer's checkpoint manager asks for it. On
        a frozen base (its reference: hone.finetune.frozen_base) they hold what trains."""
        from hone.distributed.dcp import ShardedStateIO

        return ShardedStateIO(self.ctx.is_main, frozen_base)

    def save_model(
        self, model: nn.Module, path: Path, frozen_base: dict[str, Any] | None = None
    ) -> None:
        """One consolidated safetensors file written by rank 0; every rank must call it. On
        a frozen base: the parameters that train, and the base's reference (as
        hone.checkpoint.save_weights writes them in one process).

        Tied parameters (the GPT's embedding and head) are written once, under the name that
        safetensors' own `save_model` keeps (the first in sorted order), so the file is the
        same whatever the world size, and `load_model` reads it.
        """
        from safetensors.torch import save_file

        from hone.checkpoint import save_trained, trained_names
        from hone.distributed.dcp import aliases

        state = self.full_state_dict(model)
        if not self.ctx.is_main:
            return
        if frozen_base is not None:
            save_trained(state, trained_names(model), path, frozen_base)
            return
        for alias in aliases(model):
            state.pop(alias, None)
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))

    # ----------------------------------------------------------------- reductions
    def agree(self, loss_sum: torch.Tensor, seconds: float) -> tuple[torch.Tensor, float]:
        """Rank means of a summed loss and of the training clock, in one all-reduce.

        Each rank's loss is the mean over its shard of the global batch and the shards are of
        equal size, so the mean over ranks is the mean over the global batch. The clock mean
        is the same number on every rank, so a `train.max_seconds` stop happens at one step.
        """
        packed = torch.stack([loss_sum.detach().double(), loss_sum.new_tensor(seconds).double()])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        packed /= self.ctx.world_size
        return packed[0].to(loss_sum.dtype), float(packed[1])

    def sum_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of `value` (a tensor on this rank's device) over ranks, on every rank;
        `value` itself is left as it is."""
        total = value.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def mean_over_ranks(self, value: float) -> float:
        """The mean of `value` over ranks, the same number on every rank."""
        packed = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        return float(packed[0]) / self.ctx.world_size

    def broadcast_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Rank 0's values of `metrics` on every rank (same keys on every rank)."""
        if not metrics:
            return metrics
        values = torch.tensor(list(metrics.values()), dtype=torch.float64, device=self.device)
        dist.broadcast(values, src=0)
        return dict(zip(metrics, values.tolist(), strict=True))

    def close(self) -> None:
        """Leave the process group if hone created it."""
        global _GROUP_OWNED, _LEFT_GROUP
        if _GROUP_OWNED and dist.is_initialized():
            # Every rank reaches this point before any tears the group down: a rank that
            # destroys its gloo pairs while a peer still talks to them makes that peer abort.
            dist.barrier()
            dist.destroy_process_group()
            _LEFT_GROUP = True
        _GROUP_OWNED = False


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", "dist.strategy")


def left_process_group() -> bool:
    """Whether this process joined a process group and left it (`Strategy.close`)."""
    return _LEFT_GROUP


def end_process(code: int) -> NoReturn:
    """End this process with `code` as the interpreter would (its other threads joined, the
    atexit handlers run, the output flushed), less the interpreter's own teardown.

    A gloo group's worker threads outlive destroy_process_group (DistributedDataParallel
    keeps the group alive) and destroy each finished collective's work when they get to
    it; a worker that gets to one holding a Python-made tensor while the interpreter
    finalizes takes the GIL, is ended by the interpreter, and aborts the process: SIGABRT
    ("terminate called without an active exception") after a run that had finished, and
    torchrun reports the rank as failed (seen under load about once in ten runs of
    tests/distributed/test_faults.py's restart test; torch's issue #190489). A process that
    has left its group and closed its run ends here instead, where no teardown races them."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or its reader gone
            pass
    os._exit(code)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(ctx: DistContext, timeout_seconds: float, device: torch.device) -> None:
    """Join the process group of `ctx` unless this process is already in one.

    MASTER_ADDR and MASTER_PORT come from the environment (torchrun sets them; under `srun`
    alone the batch script does). The rank and world size are passed explicitly, so SLURM's
    variables work without RANK/WORLD_SIZE.
    """
    global _GROUP_OWNED
    if dist.is_initialized():
        assert dist.get_world_size() == ctx.world_size, "process group does not match the env"
        return
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ConfigError(
                f"{var} must be set for a {ctx.world_size}-process run, got nothing; start hone "
                "with `hone train --nproc N` or torchrun, or export it in the batch script"
            )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend_for(device),
        rank=ctx.rank,
        world_size=ctx.world_size,
        timeout=timedelta(seconds=timeout_seconds),
        # Binds NCCL to this process's GPU at once instead of guessing it lazily.
        device_id=device if device.type == "cuda" else None,
    )
    _GROUP_OWNED = True


def threads_per_process(local_world_size: int) -> int:
    """CPU threads per process so that the processes of one machine share its cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, local_world_size))


def check_supported(cfg: Config) -> None:
    """Refuse the settings that several processes cannot train exactly."""
    from hone.optim import optimizer_kind

    if optimizer_kind(cfg.optim.name).closure:
        raise ConfigError(
            f"optim.name = {cfg.optim.name!r} re-evaluates the loss in a closure, which a "
            "multi-process run cannot synchronize; set --optim.name=adamw (or sgd) or train "
            "in one process"
        )
    if cfg.dist.strategy == "fsdp" and cfg.optim.name == "muon":
        raise ConfigError(
            "optim.name = 'muon' orthogonalizes whole matrices, but fsdp shards them; "
            "set --dist.strategy=ddp or --optim.name=adamw"
        )
    if cfg.dist.strategy == "fsdp" and (cfg.reg.l1 or cfg.reg.l2):
        raise ConfigError(
            f"reg.l1/reg.l2 must be 0 with dist.strategy = 'fsdp', got {cfg.reg.l1}/"
            f"{cfg.reg.l2}; set --optim.weight_decay instead, or --dist.strategy=ddp"
        )


def build_strategy(cfg: Config, ctx: DistContext, device: torch.device) -> Strategy | None:
    """The `dist.strategy` of a multi-process run, in its process group; None in one process."""
    if not ctx.distributed:
        return None
    from hone.distributed import ddp, fsdp  # noqa: F401  (register the strategies)

    strategy_cls = STRATEGIES.get(cfg.dist.strategy)
    check_supported(cfg)
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads_per_process(ctx.local_world_size))
    init_process_group(ctx, cfg.dist.timeout_seconds, device)
    return strategy_cls(cfg.dist, ctx, device)
