"""Engine overhead on the baseline GPT: `hone train` against a plain hand-written loop.

Both train `gpt-shakespeare-baseline` (the same GPT module, seed, batches, AdamW kernel and
warmup+cosine lr) for the same number of steps, alternated several rounds. Reports tokens/s of
each, the median ratio hone/plain, and the training loss of both at step 200 (hone logging
every step for that check). Run: `.venv/bin/python bench/overhead_gpt.py`.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hone.config import load_config  # noqa: E402
from hone.data import WindowBatcher, build_data  # noqa: E402
from hone.engine import Trainer  # noqa: E402
from hone.engine.runtime import seed_everything  # noqa: E402
from hone.models import ModelSpec, build_model  # noqa: E402
from hone.track.run import read_metrics  # noqa: E402

OVERRIDES = [
    "train.eval_every=0",
    "train.sample_tokens=0",
    "log.progress=on",
    "train.deterministic=true",
    "log.stats_every=0",  # the loop's own cost; statistics' cost is bench/overhead_stats.py's
]


def hone_run(steps: int, run_dir: str, log_every: int = 10) -> tuple[float, list[dict]]:
    cfg = load_config(
        "gpt-shakespeare-baseline",
        [*OVERRIDES, f"train.max_steps={steps}", f"log.every={log_every}"],
    )
    trainer = Trainer(config=cfg, run_dir=run_dir)
    trainer.fit()
    tokens = steps * cfg.train.batch_size * cfg.model.block_size
    return tokens / trainer.state.train_seconds, read_metrics(run_dir)


def plain_run(steps: int) -> tuple[float, list[float]]:
    """The loop a user writes by hand around the same model and batches."""
    cfg = load_config("gpt-shakespeare-baseline", [*OVERRIDES, f"train.max_steps={steps}"])
    seed_everything(cfg.train.seed, deterministic=True)
    data = build_data(cfg)
    model = build_model(
        cfg.model, ModelSpec("lm", (cfg.model.block_size,), data.vocab_size, data.vocab_size)
    )
    model.train()
    o, s = cfg.optim, cfg.schedule
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=o.lr,
        betas=tuple(o.betas),
        fused=True,
    )
    batches = WindowBatcher(data.train, cfg.model.block_size, cfg.train.batch_size, cfg.train.seed)
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        if step < s.warmup_steps:
            lr = o.lr * (step + 1) / s.warmup_steps
        else:
            progress = min((step - s.warmup_steps) / (s.decay_steps - s.warmup_steps), 1.0)
            lr = s.min_lr + (o.lr - s.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = lr
        ((x, y),) = batches.next_step()
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())  # the plain loop prints its loss; this is its only sync
    seconds = time.perf_counter() - start
    return steps * cfg.train.batch_size * cfg.model.block_size / seconds, losses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        hone_run(20, f"{tmp}/warm")
        plain_run(20)
        for r in range(args.rounds):
            plain, _ = plain_run(args.steps)
            ours, _ = hone_run(args.steps, f"{tmp}/r{r}")
            ratios.append(ours / plain)
            print(
                f"round {r}: plain {plain:8.0f} tok/s   hone {ours:8.0f} tok/s   ratio {ours / plain:.3f}",
                flush=True,
            )
        _, events = hone_run(200, f"{tmp}/check", log_every=1)
        _, plain_losses = plain_run(200)
    hone_loss = next(e["loss"] for e in events if e["split"] == "train" and e["step"] == 200)
    print(
        f"median ratio hone/plain: {statistics.median(ratios):.3f} (torch {torch.__version__}, {torch.get_num_threads()} threads)"
    )
    print(
        f"loss at step 200: hone {hone_loss:.7f}  plain {plain_losses[199]:.7f}  |diff| {abs(hone_loss - plain_losses[199]):.2e}"
    )


if __name__ == "__main__":
    main()
