"""Data-parallel throughput on one CPU machine: 1 process against N processes (DDP, gloo).

Trains the `gpt-shakespeare-baseline` recipe (global batch 12 windows of 64 tokens) for a
fixed number of steps in three layouts on the same machine:

    1 process x 1 thread     the unit the scaling efficiency is measured against
    1 process x N threads    the alternative to more processes: torch's intra-op threads
    N processes x 1 thread   `hone train --nproc N` (DDP over gloo, the same global batch)

and reads the training throughput (tokens/s over the global batch) that rank 0 logs, leaving
out the first logging window (start-up, first-touch allocations). Scaling efficiency is
tokens/s of N processes / (N x tokens/s of one single-threaded process). Each layout runs
`--repeats` times, alternating, and the median is reported.

Run: `.venv/bin/python bench/distributed.py` (add `--nproc 4` on a bigger machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "gpt-shakespeare-baseline"


def overrides(steps: int, log_every: int) -> list[str]:
    return [
        f"--train.max_steps={steps}",
        f"--log.every={log_every}",
        "--train.eval_every=0",
        "--train.eval_batches=1",
        "--train.sample_tokens=0",
        "--log.tensorboard=false",
        "--log.progress=off",
    ]


def tokens_per_second(nproc: int, threads: int, steps: int, log_every: int) -> float:
    """Median tokens/s of the logging windows after the first, from rank 0's metrics.jsonl."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "hone", "train", RECIPE, "--run-dir", str(run_dir)]
        cmd += overrides(steps, log_every)
        if nproc > 1:
            cmd += ["--nproc", str(nproc)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
        events = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    rates = [e["tokens_per_second"] for e in events if e["split"] == "train"][1:]
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    n = args.nproc
    layouts = {
        "1 process x 1 thread": (1, 1),
        f"1 process x {n} threads": (1, n),
        f"{n} processes x 1 thread (ddp)": (n, 1),
    }
    results: dict[str, list[float]] = {name: [] for name in layouts}
    # Other work on the machine skews every layout; the load average says how much there was.
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, (nproc, threads) in layouts.items():
            results[name].append(tokens_per_second(nproc, threads, args.steps, args.log_every))
    median = {name: statistics.median(values) for name, values in results.items()}
    unit = median["1 process x 1 thread"]
    print(f"| layout | tokens/s (median of {args.repeats}) | runs | vs 1 x 1 |")
    print("| --- | ---: | --- | ---: |")
    for name, values in results.items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"| {name} | {median[name]:.0f} | {runs} | {median[name] / unit:.2f}x |")
    ddp = median[f"{n} processes x 1 thread (ddp)"]
    print(f"\nscaling efficiency of {n} processes: {ddp / (n * unit):.0%}")
    print(f"load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}")
    print(
        f"cores: {os.cpu_count()}, steps per run: {args.steps}, torch threads per process as shown"
    )
    print(f"{n} processes against 1 process x {n} threads: {ddp / median[list(layouts)[1]]:.2f}x")


if __name__ == "__main__":
    main()
