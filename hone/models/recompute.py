"""Keep a cheap activation for backward as the recipe that made it, not as its bytes.

A transformer block's backward needs, among others, the RMSNorm's output (every linear
layer after a norm keeps its input for its weight's gradient, a LoRA layer for its A's) and
the SwiGLU's silu(gate) and silu(gate) * up (kept by the product and by the down
projection). Each is an elementwise function of tensors that backward keeps anyway (the
norm's input, gate and up), so keeping it costs memory for nothing that a few elementwise
passes in backward could not give back: for SmolLM2-135M at batch 4 x 256, 4.5 MiB a block
for the two norms, 12 MiB more for the MLP of a LoRA run (whose down projection is an
adapter, not the plain layer that hone.models.llama's old fused SwiGLU needed).

`recomputed(tensor, make)` is a context around the consumers of `tensor`: whatever autograd
saves for backward in it that is `tensor` or a view of it is stored as `make` and called
again when backward unpacks it. It works for any consumer, a plain linear layer, a LoRA
layer, an elementwise product, because it acts where autograd saves, through
torch.autograd.graph.saved_tensors_hooks; torch.utils.checkpoint recomputes whole regions,
matmuls included, which is not what these few elementwise tensors need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class _Recipe:
    """How to make a saved tensor again: `make()`, then the saved view's geometry. One recipe
    serves every consumer of the tensor in the context; the first of them to unpack makes it,
    the others reuse it, and it is let go when the last one has."""

    def __init__(self, make: Callable[[], torch.Tensor]) -> None:
        self.make, self.users = make, 0
        self.made: torch.Tensor | None = None

    def take(self) -> torch.Tensor:
        made = self.made if self.made is not None else self.make()
        self.users -= 1
        self.made = made if self.users > 0 else None
        return made


class recomputed:  # noqa: N801  (a context manager, named as the one it stands for)
    """`with recomputed(tensor, make):` around the consumers of `tensor` (contiguous, as
    `make()` returns it, to the bit): what they save of it for backward is saved as `make`.
    `make` may only read tensors that backward keeps anyway, or the recipe keeps them alive
    instead.

    Does nothing without gradients (a class, not a generator: decoding enters it four times
    a block and token), under torch.compile (which plans its own recomputation), inside
    other saved-tensor hooks than its own (torch.utils.checkpoint's, which drop the whole
    region anyway, or a user's offloading: hooks do not stack, the innermost pair would take
    every tensor from them; an enclosing `recomputed` is handed what is not this one's), or for a tensor that is not a plain contiguous one. The tensor is matched by
    its storage while the context is open, so the caller must hold it meanwhile (its memory
    cannot then go to another tensor)."""

    def __init__(self, tensor: torch.Tensor, make: Callable[[], torch.Tensor]) -> None:
        self.tensor, self.make = tensor, make
        self.hooks: torch.autograd.graph.saved_tensors_hooks | None = None

    def __enter__(self) -> None:
        tensor = self.tensor
        if not torch.is_grad_enabled() or torch.compiler.is_compiling():
            return  # (before the hooks' lookup, which dynamo cannot trace: a graph break)
        outer = torch._C._autograd._top_saved_tensors_default_hooks(False)
        if (
            (outer is not None and not hasattr(outer[0], "recipes"))
            or type(tensor) is not torch.Tensor
            or not tensor.is_contiguous()
            or tensor.storage_offset()
        ):
            return
        pointer, recipe = tensor.untyped_storage().data_ptr(), _Recipe(self.make)
        outer_pack = outer[0] if outer is not None else None  # an enclosing `recomputed`

        def pack(saved: torch.Tensor) -> Any:
            if type(saved) is torch.Tensor and saved.untyped_storage().data_ptr() == pointer:
                recipe.users += 1
                return recipe, saved.size(), saved.stride(), saved.storage_offset()
            return saved if outer_pack is None else outer_pack(saved)

        pack.recipes = True  # type: ignore[attr-defined]  # what marks ours
        self.hooks = torch.autograd.graph.saved_tensors_hooks(pack, _unpack)
        self.hooks.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.hooks is not None:
            self.hooks.__exit__(*exc)


def _unpack(packed: Any) -> torch.Tensor:
    if isinstance(packed, torch.Tensor):
        return packed
    recipe, size, stride, offset = packed
    made: torch.Tensor = recipe.take().as_strided(size, stride, offset)
    return made
