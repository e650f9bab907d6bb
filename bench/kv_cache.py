"""Generation speed: the GPT's key/value cache against recomputing the whole context.

Samples `--new-tokens` tokens (temperature 1, seeded) after a one-token prompt with the
char GPT recipe's shapes (`gpt-shakespeare-char`: 4 layers, 4 heads, 128 wide, block 64) and
with the same model at block 256, randomly initialized (speed does not depend on the
weights). Each repeat times both paths back to back, alternating which goes first, so the
ratios compare the two under the same load on a shared machine; the table gives medians.
Run: `nice -n -5 .venv/bin/python bench/kv_cache.py`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hone.config import load_config  # noqa: E402
from hone.models import ModelSpec, build_model  # noqa: E402
from hone.models.generate import generate  # noqa: E402

VOCAB_SIZE = 66  # the Shakespeare characters and the char tokenizer's unknown id


class Recompute(nn.Module):
    """The model without `new_kv_cache`: generate runs the whole context at every step."""

    def __init__(self, model: nn.Module, block_size: int) -> None:
        super().__init__()
        self.model, self.block_size = model, block_size

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)


def build(block_size: int) -> nn.Module:
    cfg = load_config("gpt-shakespeare-char", [f"model.block_size={block_size}"])
    torch.manual_seed(0)
    spec = ModelSpec("lm", (block_size,), VOCAB_SIZE, vocab_size=VOCAB_SIZE)
    return build_model(cfg.model, spec).eval()


def seconds(model: nn.Module, new_tokens: int) -> tuple[float, float, torch.Tensor]:
    """Wall-clock and CPU seconds (this process's, all threads) of one generation, and its ids."""
    prompt = torch.zeros(1, 1, dtype=torch.long)
    wall, cpu = time.perf_counter(), time.process_time()
    out = generate(model, prompt, new_tokens, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - wall, time.process_time() - cpu, out


def measure(block_size: int, new_tokens: int, repeats: int) -> dict[str, float | bool]:
    model = build(block_size)
    paths = {"cached": model, "recomputed": Recompute(model, block_size)}
    for path in paths.values():  # warm-up
        seconds(path, 8)
    times: dict[str, list[float]] = {name: [] for name in paths}
    cpu_times: dict[str, list[float]] = {name: [] for name in paths}
    outputs: dict[str, torch.Tensor] = {}
    for repeat in range(repeats):
        order = list(paths) if repeat % 2 == 0 else list(reversed(paths))
        for name in order:
            elapsed, cpu, outputs[name] = seconds(paths[name], new_tokens)
            times[name].append(elapsed)
            cpu_times[name].append(cpu)
    ratios = [r / c for c, r in zip(times["cached"], times["recomputed"], strict=True)]
    # CPU seconds do not count the time other processes held the cores: on a shared machine
    # they are the steadier figure with one thread (with two, they add both threads up).
    cpu_ratios = [r / c for c, r in zip(cpu_times["cached"], cpu_times["recomputed"], strict=True)]
    # The last step runs the prompt and all but the last new token. Within block_size both
    # paths run the same contexts, so the same seed draws the same text.
    exact = new_tokens <= block_size
    return {
        "cached": new_tokens / statistics.median(times["cached"]),
        "recomputed": new_tokens / statistics.median(times["recomputed"]),
        "ratio": statistics.median(ratios),
        "min_ratio": min(ratios),
        "max_ratio": max(ratios),
        "cpu_ratio": statistics.median(cpu_ratios),
        "same_tokens": torch.equal(outputs["cached"], outputs["recomputed"]) if exact else False,
        "exact": exact,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--block-sizes", default="64,256")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {args.new_tokens} new tokens, {args.repeats} repeats")
    print(
        "| block | threads | cached tokens/s | recomputed tokens/s | cached faster (min-max) "
        "| in CPU seconds |"
    )
    print("| ---: | ---: | ---: | ---: | --- | ---: |")
    for threads in map(int, args.threads.split(",")):
        torch.set_num_threads(threads)
        for block_size in map(int, args.block_sizes.split(",")):
            r = measure(block_size, args.new_tokens, args.repeats)
            same = f"; same tokens: {r['same_tokens']}" if r["exact"] else ""
            print(
                f"| {block_size} | {threads} | {r['cached']:.0f} | {r['recomputed']:.0f} | "
                f"**{r['ratio']:.2f}x** ({r['min_ratio']:.2f}-{r['max_ratio']:.2f}{same}) | "
                f"{r['cpu_ratio']:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
