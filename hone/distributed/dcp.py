"""Sharded checkpoints through torch.distributed.checkpoint (DCP), in safetensors, never pickle.

Under FSDP no rank holds the whole model, so each rank writes its own shards: DCP plans the
save (every tensor chunk written once, replicated tensors by one rank) and its
`HuggingFaceStorageWriter` stores each rank's chunks in one safetensors file whose header
records where each chunk sits in the full tensor:

    checkpoints/step-0000120/
        sharded/shard-00001-model-00001-of-00001.safetensors   rank 0's chunks
        sharded/shard-00002-model-00001-of-00001.safetensors   rank 1's chunks
        optimizer_groups.json     the optimizer's hyper-parameters (JSON)
        frozen_base.json          a run on a frozen base: the base's reference (the shards
                                  then hold the parameters that train, and their state)
        trainer.*, manifest.json  (hone.checkpoint.manager, rank 0, after a barrier)

DCP's default file format keeps its metadata in a pickle (`.metadata`), which torch
unpickles on load; the safetensors storage reads the layout from the files' JSON headers
instead, so nothing here is ever unpickled, and `hone.checkpoint.verify` (which refuses any
pickle) accepts these checkpoints as they are. Loading reshards: a checkpoint written by N
processes loads at any world size, sharded or not, and in a single process.

The state is keyed by parameter names (`get_state_dict`), not by the optimizer's integer
ids, so it does not depend on how the model is wrapped or sharded.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn

from hone.checkpoint import FullStateIO, check_same_base, flatten, trained_names, unflatten

SHARDED_DIR = "sharded"
GROUPS_JSON = "optimizer_groups.json"
FROZEN_JSON = "frozen_base.json"


def is_sharded(folder: Path) -> bool:
    """Whether checkpoint `folder` was written by `ShardedStateIO`."""
    return (folder / SHARDED_DIR).is_dir()


@contextmanager
def _one_process_is_intended() -> Iterator[None]:
    """Silence DCP's warning that it runs without a process group: in one process, it should."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def aliases(model: nn.Module) -> dict[str, str]:
    """{alias: kept name} of tied parameters; the kept name is the first in sorted order, as
    safetensors keeps (the same on every rank: it depends on the model only)."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return {alias: min(group) for group in names.values() for alias in group if alias != min(group)}


def _split(
    model_state: dict[str, Any], optim_state: dict[str, Any], tied: dict[str, str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors for DCP, the rest for JSON) of the name-keyed model and optimizer state.

    A tied parameter is written once (safetensors refuses two names for one storage).
    """
    tensors = {f"model/{k}": v for k, v in model_state.items() if k not in tied}
    others: dict[str, dict[str, Any]] = {}
    for param, values in optim_state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{param}/{key}"] = value
            else:  # None momentum buffers and the like
                others.setdefault(param, {})[key] = value
    return tensors, {"param_groups": optim_state["param_groups"], "state": others}


class ShardedStateIO:
    """A `hone.checkpoint.StateIO` where every rank writes and reads its own shards (DCP)."""

    def __init__(self, is_main: bool = True, frozen_base: dict[str, Any] | None = None) -> None:
        self.is_main = is_main
        self.frozen_base = frozen_base  # the trained parameters only, on top of this base

    def _model_state(self, model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
        """The model's part of a checkpoint: all of `state`, or on a frozen base the
        parameters that train (the rest is the base, rebuilt from its checkpoint)."""
        if self.frozen_base is None:
            return state
        names = trained_names(model)
        return {k: v for k, v in state.items() if k in names}

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
        """Every rank calls this (a collective); rank 0 also writes the JSON part."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import HuggingFaceStorageWriter
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optim_state = get_state_dict(model, optimizer)
        model_state = self._model_state(model, model_state)
        tensors, rest = _split(model_state, cast(dict[str, Any], optim_state), aliases(model))
        writer = HuggingFaceStorageWriter(str(folder / SHARDED_DIR), save_distributed=True)
        with _one_process_is_intended():
            dcp.save(tensors, storage_writer=writer, no_dist=not dist.is_initialized())
        if self.is_main:
            tree, leftover = flatten(rest)
            assert not leftover, f"tensors outside the optimizer state: {sorted(leftover)}"
            (folder / GROUPS_JSON).write_text(json.dumps(tree, allow_nan=False) + "\n")
            if self.frozen_base is not None:
                (folder / FROZEN_JSON).write_text(json.dumps(self.frozen_base) + "\n")

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
        """Load in place at this run's world size, whatever the world size that saved it.

        A checkpoint in the full format (`FullStateIO`) loads too, into an unsharded model.
        """
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import HuggingFaceStorageReader
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_state_dict,
            set_state_dict,
        )

        if not is_sharded(folder):
            FullStateIO(self.is_main, self.frozen_base).load(model, optimizer, folder)
            return
        if self.frozen_base is not None and (folder / FROZEN_JSON).is_file():
            saved = json.loads((folder / FROZEN_JSON).read_text())
            check_same_base(saved, self.frozen_base, folder)
        # The current state as the target: allocated, sharded as this run shards (torch
        # initializes a fresh optimizer's state so that there is something to load into).
        model_state, optim_typed = get_state_dict(model, optimizer)
        model_state = self._model_state(model, model_state)
        optim_state = cast(dict[str, Any], optim_typed)  # {"state": {name: {...}}, "param_groups"}
        tied = aliases(model)
        tensors, _ = _split(model_state, optim_state, tied)
        reader = HuggingFaceStorageReader(str(folder / SHARDED_DIR))
        with _one_process_is_intended():
            dcp.load(tensors, storage_reader=reader, no_dist=not dist.is_initialized())
        rest = unflatten(json.loads((folder / GROUPS_JSON).read_text()), {})
        for name, value in tensors.items():
            kind, _, key = name.partition("/")
            if kind == "model":
                model_state[key] = value
            else:
                param, _, field = key.rpartition("/")
                optim_state["state"][param][field] = value
        for alias, kept in tied.items():
            model_state[alias] = model_state[kept]
        for param, values in rest["state"].items():
            optim_state["state"][param].update(values)
        optim_state["param_groups"] = rest["param_groups"]
        # strict only when the checkpoint holds the whole model (a frozen base's is not in it)
        options = StateDictOptions(strict=self.frozen_base is None)
        set_state_dict(
            model,
            optimizer,
            model_state_dict=model_state,
            optim_state_dict=optim_state,
            options=options,
        )
