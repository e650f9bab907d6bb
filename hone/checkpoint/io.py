"""How the model and optimizer state reach a checkpoint directory: the `StateIO` interface.

`FullStateIO` (one process holds the whole model) writes `model.safetensors`,
`optimizer.safetensors` and `optimizer.json`. A sharded implementation (each rank writing its
shards with torch.distributed.checkpoint into a sub-folder) implements the same two methods;
the manifest, the trainer state and the atomic rename stay with rank 0 in `manager.py`, which
hashes whatever files the `StateIO` left in the directory.

A run whose frozen parameters come from elsewhere (LoRA adapters on a pretrained checkpoint,
hone.finetune.frozen_base) saves only the parameters that train: `save_weights` with the
base's reference, which goes into the file's metadata; `load_weights` checks that reference
against the base the run has rebuilt and loads the trained parameters on top. A checkpoint
of such a run is then the size of its adapters and their optimizer state, not the base's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from hone.checkpoint.format import write_json
from hone.checkpoint.state import flatten, unflatten
from hone.errors import ConfigError

MODEL_FILE = "model.safetensors"
OPTIMIZER_TENSORS, OPTIMIZER_JSON = "optimizer.safetensors", "optimizer.json"
FROZEN_BASE = "hone.frozen_base"  # metadata key of a weights file that holds no frozen tensor


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

    def __init__(self, is_main: bool = True, frozen_base: dict[str, Any] | None = None) -> None:
        self.is_main = is_main
        self.frozen_base = frozen_base  # the trained parameters only, on top of this base

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
        if not self.is_main:
            return
        save_weights(model, folder / MODEL_FILE, self.frozen_base)
        save_optimizer(optimizer, folder)

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
        load_weights(model, folder / MODEL_FILE, self.frozen_base)
        load_optimizer(optimizer, folder)


def frozen_base(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The base a run's converters (their records) name as where its frozen parameters
    come from (LoRA on a pretrained checkpoint, hone.finetune.lora); None for most runs."""
    return next((r["frozen_base"] for r in records if "frozen_base" in r), None)


def save_weights(model: nn.Module, path: Path, frozen_base: dict[str, Any] | None = None) -> None:
    """The model's weights as safetensors: every tensor (tied ones once), or with
    `frozen_base` (JSON-able: where the frozen parameters come from) only the parameters
    that require gradients, the reference in the file's metadata."""
    if frozen_base is None:
        save_model(model, str(path))
        return
    save_trained(dict(model.named_parameters()), trained_names(model), path, frozen_base)


def trained_names(model: nn.Module) -> set[str]:
    """The names of the parameters that require gradients (what a frozen-base run saves)."""
    return {name for name, param in model.named_parameters() if param.requires_grad}


def save_trained(
    tensors: dict[str, torch.Tensor], names: set[str], path: Path, frozen_base: dict[str, Any]
) -> None:
    """The tensors among `tensors` named in `names` as safetensors, with the reference to
    the frozen base they are trained on in the file's metadata."""
    trained = {n: t.detach().cpu().contiguous() for n, t in tensors.items() if n in names}
    assert trained and len(trained) == len(names), (sorted(trained), sorted(names))
    save_file(trained, str(path), metadata={FROZEN_BASE: json.dumps(frozen_base, sort_keys=True)})


def saved_frozen_base(path: Path) -> dict[str, Any] | None:
    """The base reference a weights file written by `save_weights` holds; None for a file of
    every tensor."""
    with safe_open(str(path), framework="pt") as f:
        reference = (f.metadata() or {}).get(FROZEN_BASE)
    return json.loads(reference) if reference is not None else None


def load_weights(model: nn.Module, path: Path, frozen_base: dict[str, Any] | None = None) -> None:
    """Load what `save_weights` wrote into `model`, in place. A file of trained parameters
    only loads into a model whose frozen base (rebuilt by the caller) is `frozen_base`, the
    one the file names; a changed base is refused in one line."""
    device = next(iter(model.state_dict().values()), torch.empty(0)).device
    saved = saved_frozen_base(path)
    if saved is None:
        missing, unexpected = load_model(model, str(path), device=str(device))
        assert not missing and not unexpected, (missing, unexpected)
        return
    if frozen_base is None:
        raise ConfigError(
            f"{path} holds the trained parameters of a run on the frozen base {saved['path']}, "
            "without the base; load it as that run does (the base rebuilt from its config)"
        )
    check_same_base(saved, frozen_base, path)
    tensors = load_file(str(path), device=str(device))
    trained = trained_names(model)
    assert set(tensors) == trained, (sorted(tensors), sorted(trained))
    _, unexpected = model.load_state_dict(tensors, strict=False)  # the frozen ones: missing
    assert not unexpected, unexpected


def check_same_base(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """A ConfigError when the base `current` describes is not the one `saved` (the
    reference written into `where`) names: their files differ in size or sha256."""
    old, new = saved["files"], current["files"]
    if old == new:
        return
    changed = sorted(set(old) ^ set(new)) or [n for n in sorted(old) if old[n] != new[n]]
    name = changed[0]

    def described(files: dict[str, Any]) -> str:
        entry = files.get(name)
        return f"{entry['sha256'][:12]} ({entry['bytes']} bytes)" if entry else "no such file"

    raise ConfigError(
        f"{where} holds weights trained on the frozen base {saved['path']}, whose {name} has "
        f"changed since (sha256 {described(old)} then, {described(new)} now); restore the "
        "base they were trained on, or train again"
    )


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
