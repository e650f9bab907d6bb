"""A linear layer's product for a few rows at a time, by the fastest of two kernels.

Decoding multiplies one row (a token) by every weight matrix of the model: the time is the
weights streamed from memory, and a good kernel reads them at the memory's bandwidth. The
BLAS behind `F.linear` does not always: on a 2-core AMD EPYC (MKL, torch 2.13), the fp32
product of one row by SmolLM2-135M's matrices reads 12 GB/s, while the same weights split in
two halves of rows and multiplied by `torch.bmm` (the BLAS's batched path) read 43 GB/s:
12.6 ms a token against 45 (BENCHMARKS.md). Which kernel wins is the BLAS's and the CPU's
business, not something one machine can teach, so `choose` times both, once per shape, dtype
and thread count in a process, and keeps the split only where it is clearly faster.
The two differ only in rounding (the same sums, in another order).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
Key = tuple[str, torch.dtype, int, int, int, int]  # (device, dtype, rows, out, in, threads)

# the split must save at least this share of the plain product's time to be chosen: a
# choice that a noisy timing could flip would make two runs round differently
MARGIN = 0.75
_CHOSEN: dict[Key, Kernel] = {}  # per product's shape, for this process


def plain(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, weight, bias)


def split(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (B, C) times weight (N, C) transposed, as two halves of the weight's rows: (2, N/2, C)
    @ (2, C, B) -> (2, N/2, B), read back as (B, N) (a view when B is 1). An odd N (GPT-2's
    50,257-word head) multiplies its last row apart."""
    B, (N, C) = x.size(0), weight.shape
    even = weight[: N - N % 2]  # rows of a contiguous matrix: a view
    halves = torch.bmm(even.view(2, N // 2, C), x.t().expand(2, C, B))
    y = halves.permute(2, 0, 1).reshape(B, N - N % 2)
    if N % 2:
        y = torch.cat([y, F.linear(x, weight[-1:])], dim=1)
    return y + bias if bias is not None else y


def key(rows: int, weight: torch.Tensor) -> Key:
    shape = (rows, weight.size(0), weight.size(1), torch.get_num_threads())
    return (weight.device.type, weight.dtype, *shape)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias) for x (B, C) of a few rows, by the kernel `choose` found
    fastest for this shape (F.linear's own where none was chosen)."""
    return _CHOSEN.get(key(x.size(0), weight), plain)(x, weight, bias)


def decodes_rows(layer: nn.Module) -> bool:
    """Whether `layer_product` takes this layer: an nn.Linear, or a layer whose forward takes
    its frozen weight's product function (`takes_product`: a LoRA layer)."""
    return type(layer) is nn.Linear or getattr(layer, "takes_product", False)


def layer_product(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's output for rows x (B, C), its weight's product by `linear`."""
    if type(layer) is nn.Linear:
        return linear(x, layer.weight, layer.bias)
    return layer(x, linear)  # type: ignore[no-any-return]


def weights_of(layers: Iterable[nn.Module]) -> list[torch.Tensor]:
    """The weight matrices of `layers` that a decoding step multiplies (a 4-bit LoRA base
    has none: it computes with its weight dequantized each time)."""
    return [w for layer in layers if (w := getattr(layer, "weight", None)) is not None]


def chosen(rows: int, weights: Iterable[torch.Tensor]) -> bool:
    """Whether every product of `rows` rows by these weights has its kernel chosen."""
    return all(key(rows, weight) in _CHOSEN for weight in weights)


def choose(rows: int, weights: Iterable[torch.Tensor]) -> None:
    """Choose the kernel of each shape among `weights` (a model's matrices) for products of
    `rows` rows, timing each over all the weights of its shape: read one after the other,
    they come from memory as in decoding, not from a cache that one matrix timed again and
    again would sit in."""
    groups: dict[Key, list[torch.Tensor]] = {}
    for weight in weights:
        groups.setdefault(key(rows, weight), []).append(weight)
    for shape, group in groups.items():
        if shape not in _CHOSEN:
            # only the CPU's BLAS needs the choice (and a matrix of one row has no halves)
            first = group[0]
            splits = first.device.type == "cpu" and first.size(0) > 1
            _CHOSEN[shape] = fastest(rows, group) if splits else plain


def fastest(rows: int, group: list[torch.Tensor]) -> Kernel:
    """`split` where a pass over `group` takes at most MARGIN of `plain`'s time (each
    kernel's best of 3 passes, alternated), else `plain`."""
    first = group[0]
    # its own generator: the global one's stream is the caller's sampling
    numbers = torch.Generator().manual_seed(0)
    x = torch.randn(rows, first.size(1), generator=numbers).to(first.dtype)
    best = {plain: float("inf"), split: float("inf")}
    with torch.no_grad():
        for kernel in best:  # the first pass of each pays for its set-up: not timed
            kernel(x, first, None)
        for _ in range(3):
            for kernel in best:
                start = time.perf_counter()
                for weight in group:
                    kernel(x, weight, None)
                best[kernel] = min(best[kernel], time.perf_counter() - start)
    return split if best[split] <= MARGIN * best[plain] else plain
