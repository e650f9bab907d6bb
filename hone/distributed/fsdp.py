"""`dist.strategy = "fsdp"`: parameters, gradients and optimizer state sharded over ranks (FSDP2).

`torch.distributed.fsdp.fully_shard` is applied to every transformer block (`model.blocks`)
and then to the root, which takes the remaining parameters (embeddings, final norm, head).
Each block's parameters are all-gathered just before its forward and freed after it, and its
gradients reduce-scattered in backward, so a rank holds a full copy of one block at a time
plus its 1/N shard of everything else. Models without `blocks` are sharded as one unit.

The mixed-precision policy casts the gathered parameters to `dist.fsdp_param_dtype` for
compute and reduces gradients in `dist.fsdp_reduce_dtype`; the sharded master parameters
and the optimizer state stay fp32. `dist.cpu_offload` keeps the shards (and so the optimizer
step) on the CPU, copying each block to the GPU for its compute.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import cast

import torch
from torch import nn

from hone.distributed.strategy import STRATEGIES, Strategy
from hone.errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The submodules sharded on their own before the root: the transformer blocks."""
    blocks = getattr(model, "blocks", None)
    return list(blocks) if isinstance(blocks, nn.ModuleList) else []


@STRATEGIES.register("fsdp")
class FSDPStrategy(Strategy):
    """Fully sharded data parallel: each rank stores 1/N of the model and its optimizer state."""

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import (
            CPUOffloadPolicy,
            MixedPrecisionPolicy,
            OffloadPolicy,
            fully_shard,
        )

        if self.cfg.cpu_offload and self.device.type != "cuda":
            raise ConfigError(
                "dist.cpu_offload moves parameters off a GPU, but this run computes on the CPU; "
                "set --dist.cpu_offload=false"
            )
        mp_policy = MixedPrecisionPolicy(
            param_dtype=DTYPES[self.cfg.fsdp_param_dtype],
            reduce_dtype=DTYPES[self.cfg.fsdp_reduce_dtype],
        )
        offload = CPUOffloadPolicy() if self.cfg.cpu_offload else OffloadPolicy()
        for block in shard_units(model):
            fully_shard(block, mp_policy=mp_policy, offload_policy=offload)
        fully_shard(model, mp_policy=mp_policy, offload_policy=offload)
        return model

    def no_sync(self, module: nn.Module) -> AbstractContextManager[None]:
        # Gradients are reduce-scattered after every micro-batch, not only after the last:
        # skipping the reduction (FSDP2's set_requires_gradient_sync(False)) would keep every
        # rank's unsharded gradients alive across micro-steps, a full gradient copy per GPU
        # (2 bytes per parameter in bf16: 13 GB for 7B), the very memory FSDP is there to
        # save. The sum of the sharded gradients is the same; only the traffic grows.
        return nullcontext()

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        # Gathered shard by shard into rank 0's CPU memory: the GPUs never hold a full copy.
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return cast(dict[str, torch.Tensor], get_model_state_dict(model, options=options))
