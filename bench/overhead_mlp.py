"""Per-step cost of the engine: `hone train` against a plain hand-written PyTorch loop.

A tiny MLP (64-128-10, batch 64, synthetic data), AdamW, the same seed and data, alternated
several times; the progress bar and metrics logging stay on for hone. Prints steps/s of both
and the median ratio hone/plain. Run: `.venv/bin/python bench/overhead_mlp.py`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hone.config import load_config  # noqa: E402
from hone.engine import Trainer  # noqa: E402

NUM_SAMPLES, NUM_FEATURES, NUM_CLASSES = 8192, 64, 10


def synthetic(num_samples: int = NUM_SAMPLES):
    """Seeded synthetic classification data (the bench's user data set)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(num_samples, NUM_FEATURES, generator=g)
    y = (x[:, :NUM_CLASSES] + 0.5 * torch.randn(num_samples, NUM_CLASSES, generator=g)).argmax(-1)
    return x, y


def hone_steps_per_second(
    steps: int, run_dir: str, nan_guard: bool = True, stats_every: int = 0
) -> float:
    cfg = load_config(
        "mlp-digits",
        [
            "data.name=custom",
            "data.target=bench.overhead_mlp:synthetic",
            "data.task=classification",
            "data.val_fraction=0.05",
            "data.test_fraction=0.05",
            "data.normalize=none",
            "model.depth=1",
            "model.width=128",
            "model.dropout=0",
            "optim.name=adamw",
            "optim.lr=1e-3",
            "optim.weight_decay=0",  # one param group in both loops: measure the engine, not grouping
            "schedule.name=constant",
            "schedule.warmup_steps=0",
            "train.batch_size=64",
            f"train.max_steps={steps}",
            "train.max_epochs=0",
            "train.eval_every=0",
            "train.eval_batch_size=4096",
            "log.every=50",
            "log.progress=on",
            "log.tensorboard=true",
            f"train.nan_guard={str(nan_guard).lower()}",
            # The loop's own cost; statistics' cost is bench/overhead_stats.py's.
            f"log.stats_every={stats_every}",
        ],
    )
    trainer = Trainer(cfg, run_dir)
    # the training clock excludes the per-epoch evaluations, as in the plain loop below
    trainer.fit()
    return steps / trainer.state.train_seconds


def plain_steps_per_second(steps: int, fused: bool = False) -> float:
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
    start = time.perf_counter()
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
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--no-nan-guard", action="store_true", help="hone with train.nan_guard=false"
    )
    parser.add_argument(
        "--stats-every", type=int, default=0, help="hone with log.stats_every=N (0: off)"
    )
    parser.add_argument(
        "--plain-fused", action="store_true", help="give the plain loop hone's fused AdamW kernel"
    )
    args = parser.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        hone_steps_per_second(200, f"{tmp}/warm")  # warm up allocator and kernels once
        plain_steps_per_second(200)
        for r in range(args.rounds):
            plain = plain_steps_per_second(args.steps, args.plain_fused)
            ours = hone_steps_per_second(
                args.steps, f"{tmp}/r{r}", not args.no_nan_guard, args.stats_every
            )
            ratios.append(ours / plain)
            print(
                f"round {r}: plain {plain:8.0f} steps/s   hone {ours:8.0f} steps/s   ratio {ours / plain:.3f}",
                flush=True,
            )
    print(
        f"median ratio hone/plain: {statistics.median(ratios):.3f} (torch {torch.__version__}, {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
