"""int8 quantization of mlp-digits and the char GPT: the numbers of BENCHMARKS.md's
"Compression: int8" section, against the issue's goals.

Trains mlp-digits (the recipe as is) and gpt-shakespeare-char (`--gpt-steps` steps: 300 by
default instead of the recipe's 1000, to keep the benchmark to a few minutes), then
compresses each through `hone.compress.compress` (what `hone compress RUN --quantize int8`
runs) with each backend in `--backends`. Both sides of every table are measured in this one
process, one after the other, with the same thread count; the ratios are what to read.
Run: `.venv/bin/python bench/compress_int8.py`
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import onnxruntime  # noqa: E402
import torch  # noqa: E402

from hone.compress import QuantizeInt8, compress, cpu_int8_flags  # noqa: E402
from hone.config import load_config  # noqa: E402
from hone.engine import Trainer  # noqa: E402
from hone.hardware import cpu_name  # noqa: E402

QUIET = ["log.tensorboard=false", "log.progress=off", "train.checkpoint_every=0"]
# The goals per recipe: (what, test of the compress.json table).
GOALS = {
    "mlp-digits": [
        ("accuracy drop <= 0.5 points", lambda t: t["gate"]["drop"] <= 0.5),
        ("bytes >= 3.5x smaller", lambda t: _ratio(t, "bytes") >= 3.5),
        ("batch-64 latency not slower", lambda t: _ratio(t, "latency_ms_batch64") >= 1.0),
    ],
    "gpt-shakespeare-char": [
        ("val loss +<= 2%", lambda t: t["gate"]["drop"] <= 2.0),
        ("bytes >= 3.5x smaller", lambda t: _ratio(t, "bytes") >= 3.5),
        ("batch-1 latency >= 1.5x faster", lambda t: _ratio(t, "latency_ms_batch1") >= 1.5),
    ],
}


def _ratio(table: dict, key: str) -> float:
    """original / compressed: how many times smaller or faster."""
    return table["original"][key] / table["compressed"][key]


def cpu() -> str:
    model = cpu_name()
    flags = cpu_int8_flags()
    return (
        f"{model}, {os.cpu_count()} cores, int8 flags: {', '.join(flags) or 'none (no VNNI/AMX)'}"
    )


def train(root: Path, gpt_steps: int) -> dict[str, Path]:
    runs = {
        "mlp-digits": [],
        "gpt-shakespeare-char": [f"train.max_steps={gpt_steps}", "train.max_seconds=0"],
    }
    for recipe, overrides in runs.items():
        Trainer(config=load_config(recipe, [*overrides, *QUIET]), run_dir=root / recipe).fit()
    return {recipe: root / recipe for recipe in runs}


def report(name: str, backend: str, table: dict) -> list[str]:
    a, b, gate = table["original"], table["compressed"], table["gate"]
    line = (
        f"| {name} | {backend} | {a['metric']['name']} {a['metric']['value']:.4f} -> "
        f"{b['metric']['value']:.4f} ({-gate['drop'] + 0.0:+.2f} {gate['unit']}) "
        f"| {a['bytes']:,} -> {b['bytes']:,} ({_ratio(table, 'bytes'):.2f}x) "
        f"| {a['latency_ms_batch1']:.3f} -> {b['latency_ms_batch1']:.3f} "
        f"({_ratio(table, 'latency_ms_batch1'):.2f}x) "
        f"| {a['latency_ms_batch64']:.3f} -> {b['latency_ms_batch64']:.3f} "
        f"({_ratio(table, 'latency_ms_batch64'):.2f}x) |"
    )
    if "tokens_per_second" in a:
        line += f" {a['tokens_per_second']:.0f} -> {b['tokens_per_second']:.0f} |"
    else:
        line += " |"
    goals = [f"{what}: {'met' if test(table) else 'MISSED'}" for what, test in GOALS[name]]
    return [line, f"  goals ({name}, {backend}): " + "; ".join(goals)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpt-steps", type=int, default=300)
    parser.add_argument("--backends", default="auto,torch")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write every table to this file")
    args = parser.parse_args()

    print(f"CPU: {cpu()}; load average {os.getloadavg()[0]:.2f}")
    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} thread(s)"
    )
    lines = [
        "| model | backend | val metric | bytes | batch-1 ms | batch-64 ms | tokens/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = train(Path(tmp), args.gpt_steps)
        print(f"trained; load average {os.getloadavg()[0]:.2f}")
        for name, run in runs.items():
            for backend in args.backends.split(","):
                table, _ = compress(
                    run,
                    QuantizeInt8(backend),
                    Path(tmp) / f"{name}-{backend}",
                    max_drop=100,  # the goals are checked below, not by the gate
                    repeats=args.repeats,
                    threads=args.threads,
                    log=print,
                )
                tables[f"{name}/{backend}"] = table
                lines += report(name, table["details"]["backend"], table)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(tables, indent=2) + "\n")


if __name__ == "__main__":
    main()
