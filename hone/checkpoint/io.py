"""How the model and optimizer state reach a checkpoint directory: the `StateIO` interface.

`FullStateIO` (one process holds the whole model) writes `model.safetensors`,
`optimizer.safetensors` and `optimizer.json`. A sharded implementation (each rank writing its
shards with torch.distributed.checkpoint into a sub-folder) implements the same two methods;
the manifest, the trainer state and the atomic rename stay with rank 0 in `manager.py`, which
hashes whatever files the `StateIO` left in the directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from hone.checkpoint.format import write_json
from hone.checkpoint.state import flatten, unflatten

MODEL_FILE = "model.safetensors"
OPTIMIZER_TENSORS, OPTIMIZER_JSON = "optimizer.safetensors", "optimizer.json"


class StateIO(Protocol):
    """Saves and loads the model's and the optimizer's state in a checkpoint directory."""

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
        """Write the files of this rank's part of the state into `folder` (which exists)."""
        ...

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
        """Load the state `save` wrote (the folder is already verified) into model and
        optimizer, in place."""
        ...


class FullStateIO:
    """The whole model and optimizer state, written by the main process (DDP replicates it,
    so rank 0's copy is everyone's) and loaded by every process."""

    def __init__(self, is_main: bool = True) -> None:
        self.is_main = is_main

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
        if not self.is_main:
            return
        save_model(model, str(folder / MODEL_FILE))
        save_optimizer(optimizer, folder)

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
        device = next(iter(model.state_dict().values()), torch.empty(0)).device
        missing, unexpected = load_model(model, str(folder / MODEL_FILE), device=str(device))
        assert not missing and not unexpected, (missing, unexpected)
        load_optimizer(optimizer, folder)


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """`optimizer.state_dict()` as optimizer.safetensors (tensors) + optimizer.json (the rest)."""
    tree, tensors = flatten(optimizer.state_dict())
    save_file(tensors, str(folder / OPTIMIZER_TENSORS))
    write_json(folder / OPTIMIZER_JSON, tree)


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """The inverse of `save_optimizer`; torch moves the tensors to the parameters' device."""
    # Copied into fresh allocations: safetensors hands out tensors at arbitrary offsets of one
    # buffer, and CPU kernels vectorize an unaligned tensor differently, which changed L-BFGS's
    # next step in the last bits (measured: torch 2.13, safetensors 0.8).
    tensors = {k: v.clone() for k, v in load_file(str(folder / OPTIMIZER_TENSORS)).items()}
    tree = json.loads((folder / OPTIMIZER_JSON).read_text())
    optimizer.load_state_dict(unflatten(tree, tensors))
