"""Device, seeding and determinism: the settings a run starts with (precision: precision.py)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from hone.errors import ConfigError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' is CUDA when present (this process's local GPU under torchrun), else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device = {name!r} but no CUDA device is available; set --train.device=cpu or auto"
            )
        if name == "cuda":
            name = f"cuda:{local_rank}"
    elif name != "cpu":
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, numpy and torch; in deterministic mode also pick deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def enable_fast_matmul(device: torch.device) -> None:
    """TF32 matmuls on CUDA: the fp32 fallback of mixed precision runs at tensor-core speed."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
