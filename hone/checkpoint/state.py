"""Nested state (optimizer, schedule, RNG, loop counters) as safetensors + JSON, never pickle.

`flatten(value)` splits any nesting of dicts, lists and tuples holding tensors, numpy arrays
and plain numbers into a JSON-able tree and a flat `{name: tensor}` dict for safetensors;
`unflatten` inverts it exactly: tuples stay tuples, dict keys keep their types (an optimizer's
state is keyed by int), NaN and inf survive, numpy arrays come back with their dtype.
Torch's own `state_dict()` formats are kept as they are, so `load_state_dict` takes them back.

Tags are single-key JSON objects whose key starts with `__hone_`; a user dict that happens to
use such a key is written in the tagged form too, so nothing is ambiguous.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch

_TAG = "__hone_"
_TENSOR, _ARRAY = "__hone_tensor__", "__hone_ndarray__"
_TUPLE, _DICT, _FLOAT = "__hone_tuple__", "__hone_dict__", "__hone_float__"


def flatten(value: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON-able tree, tensors): `value` with every tensor replaced by a named reference."""
    tensors: dict[str, torch.Tensor] = {}
    storages: set[tuple[int, int]] = set()

    def encode(v: Any, path: str) -> Any:
        if isinstance(v, torch.Tensor):
            t = v.detach()
            if t.device.type != "cpu":
                t = t.cpu()
            # safetensors refuses tensors that share storage (views, aliases); copy those only.
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            if key in storages and t.numel() > 0 or not t.is_contiguous():
                t = t.clone(memory_format=torch.contiguous_format)
            storages.add(key)
            tensors[path] = t
            return {_TENSOR: path}
        if isinstance(v, np.ndarray):
            # Stored as raw bytes: safetensors lacks some numpy dtypes (numpy's RNG uses uint32).
            raw = torch.from_numpy(np.ascontiguousarray(v).reshape(-1).view(np.uint8).copy())
            tensors[path] = raw
            return {_ARRAY: path, "dtype": v.dtype.str, "shape": list(v.shape)}
        if isinstance(v, bool | int | str) or v is None:
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else {_FLOAT: repr(v)}
        if isinstance(v, np.generic):
            return encode(v.item(), path)
        if isinstance(v, tuple):
            return {_TUPLE: [encode(x, f"{path}/{i}") for i, x in enumerate(v)]}
        if isinstance(v, list):
            return [encode(x, f"{path}/{i}") for i, x in enumerate(v)]
        if isinstance(v, dict):
            plain = all(isinstance(k, str) and not k.startswith(_TAG) for k in v)
            if plain:
                return {k: encode(x, f"{path}/{k}") for k, x in v.items()}
            return {_DICT: [[encode(k, path), encode(x, f"{path}/{k}")] for k, x in v.items()]}
        raise TypeError(f"cannot checkpoint a value of type {type(v).__name__} at {path!r}")

    return encode(value, prefix), tensors


def unflatten(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `flatten`."""
    if isinstance(tree, list):
        return [unflatten(x, tensors) for x in tree]
    if not isinstance(tree, dict):
        return tree
    if len(tree) == 1 or _ARRAY in tree:
        if _TENSOR in tree:
            return tensors[tree[_TENSOR]]
        if _ARRAY in tree:
            raw = tensors[tree[_ARRAY]].numpy()
            return raw.view(np.dtype(tree["dtype"])).reshape(tree["shape"]).copy()
        if _TUPLE in tree:
            return tuple(unflatten(x, tensors) for x in tree[_TUPLE])
        if _DICT in tree:
            return {unflatten(k, tensors): unflatten(x, tensors) for k, x in tree[_DICT]}
        if _FLOAT in tree:
            return float(tree[_FLOAT])
    return {k: unflatten(x, tensors) for k, x in tree.items()}


def rng_state() -> dict[str, Any]:
    """The state of every global random generator a training step may draw from."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    # Only when CUDA was used: querying it would otherwise initialize a context for nothing.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured (CUDA generators only when this process has CUDA)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
