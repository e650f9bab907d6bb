"""LoRA with the frozen base weights in bf16 (`[lora] base_dtype = "bf16"`) against fp32.

Forward + backward of a LoRA'd Llama (512 wide, 4 blocks, rank 8, 8 x 128 tokens, fp32
activations: each forward casts the bf16 weights to fp32), the fastest of --rounds steps
after 2 warm-up steps, the two models' steps alternating, for attention and all-linear
targets; prints each dtype's milliseconds and the ratio (quoted in hone/finetune/lora.py).

Run: `.venv/bin/python bench/lora_base_dtype.py [--threads N]`.
"""

from __future__ import annotations

import argparse
import time

import torch

from hone.finetune.lora import LoRA
from hone.models.llama import Llama, LlamaConfig


def lora_llama(base_dtype: str, targets: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = Llama(LlamaConfig(n_layer=4, n_head=8, n_embd=512, block_size=128), 1024)
    return LoRA(rank=8, targets=targets, base_dtype=base_dtype).convert(model)


def step_seconds(targets: str, rounds: int) -> tuple[float, float]:
    """The fastest step of the fp32-base and the bf16-base model, their steps alternating
    (so that a neighbour's load on a shared machine falls on both alike)."""
    models = [lora_llama("fp32", targets), lora_llama("bf16", targets)]
    ids = torch.randint(0, 1024, (8, 128))
    best = [float("inf"), float("inf")]
    for i in range(rounds + 2):
        for j, model in enumerate(models):
            start = time.perf_counter()
            model(ids).mean().backward()
            if i >= 2:  # the first steps warm the allocator and kernels up
                best[j] = min(best[j], time.perf_counter() - start)
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for targets in ("attention", "all-linear"):
        fp32, bf16 = step_seconds(targets, args.rounds)
        print(
            f"{targets}: fp32 base {fp32 * 1e3:.0f} ms, bf16 base {bf16 * 1e3:.0f} ms, "
            f"bf16 / fp32 {bf16 / fp32:.2f}"
        )


if __name__ == "__main__":
    main()
