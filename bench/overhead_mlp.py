"""Per-step cost of the engine: `hone train` against a plain hand-written PyTorch loop.

A tiny MLP (64-128-10, batch 64, synthetic data), AdamW, the same seed and data; the progress
bar (`log.progress=on`), metrics.jsonl and TensorBoard logging (`log.every=50`) stay on for
hone. Each round times both loops, by wall clock and by CPU time (every thread of the process:
TensorBoard's writer thread counts for hone), hone's evaluations left out as its training
clock leaves them out. The rounds alternate which loop runs first (hone-plain, plain-hone, ...)
so that a drift in the machine's speed favours neither. torch runs a fixed number of threads
(--threads, default 1), optionally on fixed cores (--cores).

The spread is the point: on a busy machine single rounds of this benchmark ranged from 0.93
to 1.21 while the medians of two machines differed by more than the gap measured. Printed: each
round, then a markdown table (for BENCHMARKS.md) of the per-round ratio hone/plain in steps/s:
median, min, max, interquartile range, a bootstrap 95% interval of the median and the ratio of
the medians. Everything goes to a JSON file too (--out, default bench/results/overhead_mlp.json).

Run: `.venv/bin/python bench/overhead_mlp.py --plain-fused` (both loops with the fused AdamW
kernel hone picks).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hone.config import load_config  # noqa: E402
from hone.engine import Trainer  # noqa: E402
from hone.engine.observers import Observer  # noqa: E402

NUM_SAMPLES, NUM_FEATURES, NUM_CLASSES = 8192, 64, 10
RESULTS = Path(__file__).resolve().parent / "results" / "overhead_mlp.json"


def synthetic(num_samples: int = NUM_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded synthetic classification data (the bench's user data set)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(num_samples, NUM_FEATURES, generator=g)
    y = (x[:, :NUM_CLASSES] + 0.5 * torch.randn(num_samples, NUM_CLASSES, generator=g)).argmax(-1)
    return x, y


@dataclasses.dataclass
class Timing:
    """One loop's run: steps per second of wall clock and of CPU time."""

    steps: int
    wall_seconds: float
    cpu_seconds: float

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.wall_seconds

    @property
    def steps_per_cpu_second(self) -> float:
        return self.steps / self.cpu_seconds

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self) | {
            "steps_per_second": self.steps_per_second,
            "steps_per_cpu_second": self.steps_per_cpu_second,
        }


class TimedTrainer(Trainer):
    """The trainer, keeping the CPU time of its evaluations (left out of the step time)."""

    eval_cpu_seconds = 0.0

    def evaluate(self) -> dict[str, float]:
        start = time.process_time()
        try:
            return super().evaluate()
        finally:
            self.eval_cpu_seconds += time.process_time() - start


class LoopCpuTime(Observer):
    """CPU time of the training loop, net of evaluations: from the start of the loop to its
    last train log, which the last step always writes. Read at log steps only, so that it
    adds nothing to the steps between them."""

    start = end = 0.0

    def on_fit_start(self, trainer: Trainer) -> None:
        self.start = self.now(trainer)

    def on_log(self, trainer: Trainer, event: dict[str, Any]) -> None:
        if event.get("split") == "train":
            self.end = self.now(trainer)

    @staticmethod
    def now(trainer: Trainer) -> float:
        return time.process_time() - getattr(trainer, "eval_cpu_seconds", 0.0)


# The tiny MLP on the synthetic data, as hone trains it (bench/overhead_stats.py uses it too).
MLP = [
    "data.name=custom",
    "data.target=bench.overhead_mlp:synthetic",
    "data.task=classification",
    "data.val_fraction=0.05",
    "data.test_fraction=0.05",
    "data.normalize=none",
    "model.depth=1",
    "model.width=128",
    "model.dropout=0",
    "optim.weight_decay=0",  # one param group in both loops: measure the engine, not grouping
    "schedule.name=constant",
    "schedule.warmup_steps=0",
    "train.batch_size=64",
    "train.max_epochs=0",
    "train.eval_every=0",
    "train.eval_batch_size=4096",
    "log.every=50",
]


def hone_overrides(nan_guard: bool, stats_every: int, threads: int) -> list[str]:
    """hone's config of the MLP, as the plain loop trains it (train.max_steps aside)."""
    overrides = [
        *MLP,
        "optim.name=adamw",
        "optim.lr=1e-3",
        "train.precision=fp32",  # the plain loop's precision, whatever 'auto' finds here
        "log.progress=on",
        "log.tensorboard=true",
        f"train.nan_guard={str(nan_guard).lower()}",
        # The loop's own cost; statistics' cost is bench/overhead_stats.py's.
        f"log.stats_every={stats_every}",
        f"train.threads={threads}",  # the same team as the plain loop's, never re-tuned
    ]
    return overrides


def hone_run(steps: int, run_dir: str, overrides: list[str]) -> Timing:
    """`hone train` as the CLI runs it (Trainer.fit); the wall clock is its training clock."""
    cfg = load_config("mlp-digits", [*overrides, f"train.max_steps={steps}"])
    cpu = LoopCpuTime()
    trainer = TimedTrainer(config=cfg, run_dir=run_dir, observers=[cpu])
    trainer.fit()
    return Timing(steps, trainer.state.train_seconds, cpu.end - cpu.start)


def plain_run(steps: int, fused: bool = False) -> Timing:
    """What a user writes by hand: shuffle per epoch, index, forward, backward, step."""
    torch.manual_seed(0)
    x, y = synthetic()
    n_train = int(NUM_SAMPLES * 0.9)
    x, y = x[:n_train], y[:n_train]
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0, fused=fused or None)
    loss_fn = nn.CrossEntropyLoss()
    batch = 64
    per_epoch = n_train // batch
    start, start_cpu = time.perf_counter(), time.process_time()
    step = 0
    while step < steps:
        order = torch.randperm(n_train)
        for i in range(per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step == steps:
                break
    return Timing(steps, time.perf_counter() - start, time.process_time() - start_cpu)


def spread(ratios: list[float], resamples: int = 2000) -> dict[str, float]:
    """Median, extremes, quartiles and a bootstrap 95% interval of the median of `ratios`."""
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    rng = random.Random(0)
    medians = sorted(
        statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples)
    )
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "ci95_low": medians[int(0.025 * resamples)],
        "ci95_high": medians[int(0.975 * resamples) - 1],
    }


def summarize(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """For the wall clock and for CPU time: the spread of the per-round ratios, the medians of
    both loops' rates and the ratio of those medians."""
    summary = {}
    for clock, rate in (("wall", "steps_per_second"), ("cpu", "steps_per_cpu_second")):
        hone = statistics.median(r["hone"][rate] for r in rounds)
        plain = statistics.median(r["plain"][rate] for r in rounds)
        summary[clock] = {
            **spread([r["hone"][rate] / r["plain"][rate] for r in rounds]),
            "hone_median": hone,
            "plain_median": plain,
            "ratio_of_medians": hone / plain,
        }
    return summary


def markdown(result: dict[str, Any]) -> str:
    """The result as a few lines to paste into BENCHMARKS.md."""
    env = result["environment"]
    load = f"{env['loadavg_before'][0]:.1f} -> {env['loadavg_after'][0]:.1f}"
    cores = ",".join(map(str, env["cores"])) if env["cores"] else "any"
    lines = [
        f"`{result['command']}`: {len(result['rounds'])} rounds of {result['steps']} steps, "
        f"alternating; torch {env['torch']}, {env['threads']} thread(s), cores {cores}, "
        f"{env['cpu_count']} CPUs, load {load}, {result['date']}",
        "",
        "| hone/plain, steps/s | hone | plain | median | min | max | IQR (q1-q3) "
        "| 95% CI of the median | ratio of medians |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for clock, label in (("wall", "wall clock"), ("cpu", "CPU time")):
        s = result["summary"][clock]
        lines.append(
            f"| {label} | {s['hone_median']:,.0f} | {s['plain_median']:,.0f} "
            f"| **{s['median']:.3f}** | {s['min']:.3f} | {s['max']:.3f} "
            f"| {s['iqr']:.3f} ({s['q1']:.3f}-{s['q3']:.3f}) "
            f"| {s['ci95_low']:.3f}-{s['ci95_high']:.3f} | {s['ratio_of_medians']:.3f} |"
        )
    for clock, label in (("wall", "wall clock"), ("cpu", "CPU time")):
        ratios = ", ".join(f"{r['ratio_' + clock]:.3f}" for r in result["rounds"])
        lines.append(f"\nRounds ({label}): {ratios}")
    return "\n".join(lines)


def run_rounds(
    num_rounds: int, steps: int, plain_fused: bool, overrides: list[str]
) -> list[dict[str, Any]]:
    """Both loops per round, each round's first loop the other one than the last round's."""
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        hone_run(200, f"{tmp}/warm", overrides)  # warm up allocator and kernels once
        plain_run(200, plain_fused)
        for r in range(num_rounds):
            # Alternate which loop runs first: a machine that speeds up or slows down during
            # the benchmark then favours neither.
            order = ("hone", "plain") if r % 2 == 0 else ("plain", "hone")
            timings = {}
            for name in order:
                if name == "hone":
                    timings[name] = hone_run(steps, f"{tmp}/r{r}", overrides)
                else:
                    timings[name] = plain_run(steps, plain_fused)
            ours, plain = timings["hone"], timings["plain"]
            rounds.append(
                {
                    "order": "-".join(order),
                    "hone": ours.as_dict(),
                    "plain": plain.as_dict(),
                    "ratio_wall": ours.steps_per_second / plain.steps_per_second,
                    "ratio_cpu": ours.steps_per_cpu_second / plain.steps_per_cpu_second,
                }
            )
            print(
                f"round {r} ({rounds[-1]['order']}): plain {plain.steps_per_second:6.0f} steps/s "
                f"({plain.steps_per_cpu_second:6.0f} per CPU s)   hone {ours.steps_per_second:6.0f} "
                f"steps/s ({ours.steps_per_cpu_second:6.0f} per CPU s)   ratio: wall "
                f"{rounds[-1]['ratio_wall']:.3f}, CPU {rounds[-1]['ratio_cpu']:.3f}",
                flush=True,
            )
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5000, help="steps of each loop per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--no-nan-guard", action="store_true", help="hone with train.nan_guard=false"
    )
    parser.add_argument(
        "--stats-every", type=int, default=0, help="hone with log.stats_every=N (0: off)"
    )
    parser.add_argument(
        "--plain-fused", action="store_true", help="give the plain loop hone's fused AdamW kernel"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of both loops")
    parser.add_argument(
        "--cores", type=str, default="", help="pin the process to these cores, e.g. 0 or 0,1"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON result file")
    args = parser.parse_args()
    cores = sorted(int(c) for c in args.cores.split(",") if c.strip())
    if cores and args.threads > len(cores):  # OpenMP threads sharing a core wait on each other
        parser.error(
            f"--threads ({args.threads}) must be at most the number of --cores ({args.cores})"
        )
    if cores:  # before torch starts its threads: they inherit it
        os.sched_setaffinity(0, cores)
    torch.set_num_threads(args.threads)
    overrides = hone_overrides(not args.no_nan_guard, args.stats_every, args.threads)
    loadavg_before = os.getloadavg()
    rounds = run_rounds(args.rounds, args.steps, args.plain_fused, overrides)
    result = {
        "command": "python bench/overhead_mlp.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "steps": args.steps,
        "plain_fused": args.plain_fused,
        "nan_guard": not args.no_nan_guard,
        "stats_every": args.stats_every,
        "hone_overrides": overrides,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "cores": cores,
            "loadavg_before": loadavg_before,
            "loadavg_after": os.getloadavg(),
        },
        "rounds": rounds,
        "summary": summarize(rounds),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(markdown(result))
    print(f"\n(written to {args.out})")


if __name__ == "__main__":
    main()
