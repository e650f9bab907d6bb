"""Multi-process training through torch.distributed: torchrun's launcher, DDP, FSDP2, DCP.

`context.py` says who this process is (from torchrun's or SLURM's environment), `strategy.py`
joins the process group and holds what every strategy shares (reductions, the consolidated
final weights), `ddp.py` and `fsdp.py` are the two `dist.strategy` choices, `dcp.py` the
sharded checkpoint format, and `launch.py` the `hone train --nproc` launcher. A single process
builds none of it (see docs/distributed.md).
"""

from hone.distributed.context import DistContext

__all__ = ["DistContext"]
