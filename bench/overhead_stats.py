"""Step-time cost of training statistics (`log.stats_every`) on the tiny MLP and the baseline GPT.

Two measurements. End to end: each model trains with statistics off and at several
intervals, alternated over rounds so that machine load hits them alike; the median step time
of each setting and its ratio to statistics off (needs an idle machine: a few percent is
within the round-to-round spread). Attributed (`--attributed`): one run per interval with a
clock around every piece of the statistics' code (its hooks and the forward hooks that
gather activations); their total over the rest of the training time is the overhead, a
ratio that machine load inflates on both sides alike.
Run: `.venv/bin/python bench/overhead_stats.py [--attributed] [--model mlp|gpt]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.overhead_mlp import MLP  # noqa: E402
from hone.config import load_config  # noqa: E402
from hone.engine import Trainer  # noqa: E402
from hone.engine import stats as stats_module  # noqa: E402

GPT = ["train.eval_every=0", "train.sample_tokens=0", "log.every=10"]
# Long enough that the first record's one-time TensorBoard histograms (160 ms on the GPT)
# weigh as in a real run: a few percent of a hundred steps, nothing of thousands.
SETUPS = {"mlp": ("mlp-digits", MLP, 3000), "gpt": ("gpt-shakespeare-baseline", GPT, 600)}


def seconds_per_step(model: str, stats_every: int, run_dir: str, steps: int) -> float:
    recipe, overrides, _ = SETUPS[model]
    cfg = load_config(
        recipe,
        [
            *overrides,
            f"train.max_steps={steps}",
            f"log.stats_every={stats_every}",
            "log.progress=off",
            "log.tensorboard=true",
        ],
    )
    trainer = Trainer(config=cfg, run_dir=run_dir)
    trainer.fit()
    return trainer.state.train_seconds / steps


class Clock:
    """Seconds spent inside the wrapped functions."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.depth = 0

    def wrap(self, owner: type, name: str) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            self.depth += 1
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:  # nested calls count once
                    self.seconds += time.perf_counter() - start

        setattr(owner, name, timed)


def attributed(model: str, every_values: list[int], run_dir: str) -> None:
    clock = Clock()
    for name in ("on_fit_start", "on_step_start", "on_after_backward", "on_step_end"):
        clock.wrap(stats_module.TrainingStats, name)
    clock.wrap(stats_module._Layer, "observe")
    steps = SETUPS[model][2] * (2 if model == "mlp" else 1)
    for every in every_values:
        clock.seconds = 0.0
        per_step = seconds_per_step(model, every, f"{run_dir}/{model}-attr-{every}", steps)
        total = per_step * steps
        share = clock.seconds / max(total - clock.seconds, 1e-9)
        print(
            f"{model}: stats every {every:>4}: {clock.seconds / steps * 1e3:7.4f} ms/step in "
            f"statistics, {share:6.2%} of the rest ({per_step * 1e3:.3f} ms/step)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["mlp", "gpt", "both"], default="both")
    parser.add_argument("--every", type=int, nargs="+", default=[0, 10, 25, 50, 100])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--attributed", action="store_true", help="clock the statistics' code")
    args = parser.parse_args()
    models = ["mlp", "gpt"] if args.model == "both" else [args.model]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        if args.attributed:
            for model in models:
                seconds_per_step(model, 0, f"{tmp}/{model}-warm", SETUPS[model][2] // 5)
                attributed(model, [e for e in args.every if e > 0], tmp)
            return
        for model in models:
            steps = SETUPS[model][2]
            seconds_per_step(model, 0, f"{tmp}/{model}-warm", steps // 5)
            times: dict[int, list[float]] = {every: [] for every in args.every}
            for r in range(args.rounds):
                for every in args.every:
                    run_dir = f"{tmp}/{model}-{every}-{r}"
                    times[every].append(seconds_per_step(model, every, run_dir, steps))
            off = statistics.median(times[0]) if 0 in times else None
            for every, values in times.items():
                median = statistics.median(values)
                ratio = f"  x{median / off:.3f} of off" if off else ""
                label = "off" if every == 0 else f"every {every}"
                print(f"{model}: stats {label:>9}: {median * 1e3:8.3f} ms/step{ratio}", flush=True)


if __name__ == "__main__":
    main()
