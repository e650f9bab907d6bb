"""Throughput and MFU of the GPT recipes: fp32 against bf16 autocast, torch.compile off and on.

Trains each recipe for `--steps` steps per setting through the engine and reports the median
tokens/s and MFU of the logged windows after the first (which holds compilation and warm-up).
Run: `.venv/bin/python bench/throughput_gpt.py` (add `--device cuda` on a GPU machine).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hone.config import load_config  # noqa: E402
from hone.engine import Trainer  # noqa: E402
from hone.track.run import read_metrics  # noqa: E402


def measure(
    recipe: str, precision: str, compile_model: bool, steps: int, device: str, extra: list[str]
) -> dict:
    overrides = [
        f"train.max_steps={steps}",
        "train.max_seconds=0",
        "train.eval_every=0",
        "train.sample_tokens=0",
        f"train.precision={precision}",
        f"train.compile={str(compile_model).lower()}",
        f"train.device={device}",
        f"log.every={max(1, steps // 10)}",
        "log.tensorboard=false",
        "log.progress=off",
        *extra,
    ]
    cfg = load_config(recipe, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(config=cfg, run_dir=tmp).fit()
        events = [e for e in read_metrics(tmp) if e["split"] == "train"][1:]
    return {
        "tokens_per_second": statistics.median(e["tokens_per_second"] for e in events),
        "mfu": statistics.median(e["mfu"] for e in events),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipes", default="gpt-shakespeare-baseline,gpt-shakespeare-char")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--compile", default="false,true")
    parser.add_argument(
        "--override", action="append", default=[], help="extra config override a.b=v"
    )
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print("| recipe | precision | compile | tokens/s | MFU |")
    print("| --- | --- | --- | ---: | ---: |")
    settings = itertools.product(
        args.recipes.split(","), args.precisions.split(","), args.compile.split(",")
    )
    for recipe, precision, compiled in settings:
        result = measure(
            recipe, precision, compiled == "true", args.steps, args.device, args.override
        )
        print(
            f"| {recipe} | {precision} | {compiled} | {result['tokens_per_second']:.0f} | {result['mfu']:.1%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
