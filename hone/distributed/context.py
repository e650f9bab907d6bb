"""Who this process is in a (possibly single-process) group, read from the launcher's environment.

torchrun (and `hone train --nproc`) sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE;
SLURM's `srun` without torchrun sets SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and friends,
and the batch script sets MASTER_ADDR/MASTER_PORT (see examples/slurm/).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this machine: they share its CPU cores

    @property
    def is_main(self) -> bool:
        """Only the main process logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> DistContext:
        """Read RANK/WORLD_SIZE/LOCAL_RANK as set by torchrun (or SLURM through srun)."""
        env = os.environ
        if "RANK" not in env and "SLURM_PROCID" in env and "MASTER_ADDR" in env:
            world_size = int(env["SLURM_NTASKS"])
            nodes = int(env.get("SLURM_NNODES", 1))
            per_node = env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]
            return cls(
                int(env["SLURM_PROCID"]),
                world_size,
                int(env.get("SLURM_LOCALID", 0)),
                int(per_node) if per_node.isdigit() else max(1, world_size // nodes),
            )
        world_size = int(env.get("WORLD_SIZE", 1))
        return cls(
            int(env.get("RANK", 0)),
            world_size,
            int(env.get("LOCAL_RANK", 0)),
            int(env.get("LOCAL_WORLD_SIZE", world_size)),
        )
