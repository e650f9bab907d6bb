"""`dist.strategy = "ddp"`: every rank holds the whole model; gradients are averaged.

torch's DistributedDataParallel broadcasts rank 0's parameters when it wraps the model (so
every replica starts equal), then all-reduces gradients in buckets while backward runs and
divides them by the world size: with each rank's loss the mean over an equal shard of the
global batch, the averaged gradient is the gradient of the mean over the global batch, the
same as one process computing the whole batch.
"""

from __future__ import annotations

import inspect
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hone.distributed.strategy import STRATEGIES, Strategy


@STRATEGIES.register("ddp")
class DDPStrategy(Strategy):
    """Replicated parameters, gradients all-reduced during backward."""

    def wrap(self, model: nn.Module) -> nn.Module:
        # Buffers are not re-broadcast at every forward: hone's models hold only constant
        # buffers (masks, rotary tables), and the broadcast is a collective per step. torch
        # 2.13 renamed the switch; older releases know only the first name.
        params = inspect.signature(DistributedDataParallel).parameters
        no_buffer_sync: dict[str, Any] = {
            "forward_sync_buffers"
            if "forward_sync_buffers" in params
            else "broadcast_buffers": False
        }
        return DistributedDataParallel(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            gradient_as_bucket_view=True,  # gradients live in the all-reduce buckets: no copy
            **no_buffer_sync,
        )

    def no_sync(self, module: nn.Module) -> AbstractContextManager[None]:
        assert isinstance(module, DistributedDataParallel), type(module)
        return module.no_sync()

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        # Replicas are identical: rank 0's own parameters are the whole model.
        return dict(model.state_dict()) if self.ctx.is_main else {}
