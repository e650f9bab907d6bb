"""Steps/s of `hone.Trainer(model, loader).fit()` against a plain PyTorch loop and against
PyTorch Lightning, all three over the same kind of `DataLoader`.

Two workloads, each a user's own `nn.Module` and `DataLoader`:
- mlp: a tiny MLP (64-128-10) on scikit-learn's digits, batch 64, shuffled each epoch;
- gpt: gpt-shakespeare-baseline's GPT (4 x 128, block 64) on random windows of the
  character-tokenized corpus, batch 12.
Every arm gets a fresh copy of the same model (same seed), a fresh loader (same seeded
shuffle), the same optimizer (AdamW, torch's default kernel), the same loss and the same number
of steps, on the same number of torch threads (--threads). hone runs as a user gets it (NaN
guard, metrics.jsonl, TensorBoard, training statistics at their defaults), with no validation
data, fp32 and a constant lr like the others; Lightning runs without logger, checkpoints,
progress bar or model summary (its defaults would write a checkpoint every epoch: 28 steps
of the MLP). The progress bar is off for hone too.

Each arm's clock runs from the start of its loop to its last step (hone's training clock,
Lightning's on_train_start to on_train_end), by wall clock and by CPU time. The rounds
rotate which arm goes first (hone-plain-lightning, plain-lightning-hone, ...), so that a drift
in the machine's speed favours none; the per-round ratios to the plain loop are summarized as
bench/overhead_mlp.py does (median, spread, a bootstrap 95% interval of the median).

Run: `.venv/bin/python bench/python_loop.py` (both workloads; `--workload mlp` for one).
Results: bench/results/python_loop.json and a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hone  # noqa: E402
from bench.overhead_mlp import Timing, spread  # noqa: E402
from hone.config import load_config  # noqa: E402
from hone.engine.observers import Observer  # noqa: E402
from hone.hardware import cpu_name  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "python_loop.json"
ARMS = ("hone", "plain", "lightning")
GOALS = {"mlp": 0.95, "gpt": 0.97}  # hone/plain, steps/s (issue 24)

Optimizer = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


@dataclass
class Workload:
    """A user's model, loader, optimizer and loss, built afresh for every arm and round."""

    name: str
    steps: int  # per arm and round
    model: Callable[[], nn.Module]
    loader: Callable[[], DataLoader]
    optimizer: Optimizer
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    task: str
    hone_overrides: list[str]


# ----------------------------------------------------------------------------- workloads
def mlp_workload(steps: int) -> Workload:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # pixels 0..16
    y = torch.tensor(digits.target, dtype=torch.long)
    dataset = TensorDataset(x, y)

    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def loader() -> DataLoader:
        return DataLoader(
            dataset, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
        )

    return Workload(
        "mlp",
        steps,
        model,
        loader,
        lambda params: torch.optim.AdamW(params, lr=1e-3),
        F.cross_entropy,
        "classification",
        [],
    )


class TokenWindows(Dataset):
    """Every window of `block_size` tokens and the window one token on: (x, y), both (T,)."""

    def __init__(self, tokens: torch.Tensor, block_size: int) -> None:
        self.tokens, self.block_size = tokens, block_size

    def __len__(self) -> int:
        return len(self.tokens) - self.block_size - 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        window = self.tokens[i : i + self.block_size + 1]
        return window[:-1], window[1:]


def gpt_workload(steps: int) -> Workload:
    from hone.data import build_data
    from hone.models import ModelSpec, build_model

    cfg = load_config("gpt-shakespeare-baseline")
    data = build_data(cfg)
    tokens = torch.from_numpy(data.train.astype("int64"))  # type: ignore[union-attr]
    block, vocab = cfg.model.block_size, data.vocab_size  # type: ignore[union-attr]
    windows = TokenWindows(tokens, block)

    def model() -> nn.Module:
        torch.manual_seed(0)
        return build_model(cfg.model, ModelSpec("lm", (block,), vocab, vocab))

    def loader() -> DataLoader:
        return DataLoader(
            windows,
            batch_size=cfg.train.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
        )

    def optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        params = list(params)  # weight decay on matrices only, as the recipe does
        return torch.optim.AdamW(
            [
                {"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
            ],
            lr=1e-3,
            betas=(0.9, 0.99),
        )

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # logits (B, T, V), targets (B, T)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    # The recipe's model settings (the handed-in model is its GPT), none of its training ones.
    return Workload("gpt", steps, model, loader, optimizer, loss, "lm", ["train.sample_tokens=0"])


WORKLOADS = {"mlp": (mlp_workload, 3000), "gpt": (gpt_workload, 300)}


# ----------------------------------------------------------------------------- the arms
class Clock:
    """Wall clock and CPU time (every thread of the process) between `start` and `stop`."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, steps: int) -> Timing:
        return Timing(steps, time.perf_counter() - self.wall, time.process_time() - self.cpu)


class CpuClock(Observer):
    """hone's CPU time from the start of its loop to the train log of its last step (the last
    step always logs), read twice: a reading at every log step cost hone 1.6% of its loop."""

    def __init__(self, last_step: int) -> None:
        self.last_step, self.start, self.end = last_step, 0.0, 0.0

    def on_fit_start(self, trainer: Any) -> None:
        self.start = time.process_time()

    def on_log(self, trainer: Any, event: dict[str, Any]) -> None:
        if event["step"] == self.last_step and event.get("split") == "train":
            self.end = time.process_time()


def plain_arm(w: Workload, steps: int, run_dir: str) -> Timing:
    """What a user writes by hand: epochs over the loader, forward, loss, backward, step."""
    model, loader = w.model(), w.loader()
    optimizer = w.optimizer(model.parameters())
    model.train()
    clock, step = Clock(), 0
    clock.start()
    while step < steps:
        for x, y in loader:
            loss = w.loss(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step == steps:
                break
    return clock.stop(steps)


def hone_arm(w: Workload, steps: int, run_dir: str, threads: int = 1) -> Timing:
    """`hone.Trainer(model, loader, ...).fit()`; the wall clock is its training clock."""
    overrides = [
        f"train.max_steps={steps}",
        "train.max_epochs=0",
        f"train.threads={threads}",  # the others' team, never re-tuned
        "train.precision=fp32",
        "train.eval_every=0",
        "schedule.name=constant",
        "schedule.warmup_steps=0",
        "log.progress=off",
        *w.hone_overrides,
    ]
    cpu = CpuClock(steps)
    trainer = hone.Trainer(
        w.model(),
        w.loader(),
        optimizer=w.optimizer,
        loss=w.loss,
        task=w.task,
        overrides=overrides,
        observers=[cpu],
        run_dir=run_dir,
    )
    trainer.fit()
    assert trainer.state.step == steps, trainer.state.step
    return Timing(steps, trainer.state.train_seconds, cpu.end - cpu.start)


def lightning_arm(w: Workload, steps: int, run_dir: str) -> Timing:
    """The same model as a LightningModule, `L.Trainer(max_steps=...).fit(module, loader)`."""
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = w.model()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return w.loss(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return w.optimizer(self.parameters())

    class Timed(L.Callback):
        def on_train_start(self, trainer: Any, module: Any) -> None:
            clock.start()

        def on_train_end(self, trainer: Any, module: Any) -> None:
            self.timing = clock.stop(trainer.global_step)

    clock, timed = Clock(), Timed()
    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=-1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timed],
        default_root_dir=run_dir,
    )
    trainer.fit(Module(), w.loader())
    assert timed.timing.steps == steps, timed.timing.steps
    return timed.timing


# ----------------------------------------------------------------------------- rounds
def orders(num_rounds: int) -> Iterator[tuple[str, ...]]:
    """Each round's order of the arms: rotated by one each round."""
    for r in range(num_rounds):
        yield ARMS[r % 3 :] + ARMS[: r % 3]


def run_rounds(w: Workload, num_rounds: int, threads: int, arms: tuple[str, ...]) -> list[dict]:
    run = {
        "hone": lambda steps, d: hone_arm(w, steps, d, threads),
        "plain": lambda steps, d: plain_arm(w, steps, d),
        "lightning": lambda steps, d: lightning_arm(w, steps, d),
    }
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in arms:  # warm up allocator, kernels and imports once each
            run[name](max(w.steps // 10, 20), f"{tmp}/warm-{name}")
        for r, order in enumerate(orders(num_rounds)):
            timings = {
                name: run[name](w.steps, f"{tmp}/r{r}-{name}") for name in order if name in arms
            }
            record: dict[str, Any] = {"order": "-".join(n for n in order if n in arms)}
            record |= {name: t.as_dict() for name, t in timings.items()}
            plain = timings["plain"]
            for name in (n for n in arms if n != "plain"):
                record[f"{name}_wall"] = timings[name].steps_per_second / plain.steps_per_second
                record[f"{name}_cpu"] = (
                    timings[name].steps_per_cpu_second / plain.steps_per_cpu_second
                )
            rounds.append(record)
            line = "   ".join(
                f"{n} {t.steps_per_second:7.1f} steps/s ({t.steps_per_cpu_second:7.1f}/CPU s)"
                for n, t in timings.items()
            )
            ratios = ", ".join(
                f"{n}/plain {record[n + '_wall']:.3f} (CPU {record[n + '_cpu']:.3f})"
                for n in arms
                if n != "plain"
            )
            print(f"{w.name} round {r} ({record['order']}): {line}   {ratios}", flush=True)
    return rounds


def summarize(rounds: list[dict], arms: tuple[str, ...]) -> dict[str, dict[str, dict]]:
    """Per arm and clock: the median rate, and the spread of the per-round ratios to plain."""
    summary: dict[str, dict[str, dict]] = {}
    for name in arms:
        summary[name] = {}
        for clock, rate in (("wall", "steps_per_second"), ("cpu", "steps_per_cpu_second")):
            entry = {"median_rate": statistics.median(r[name][rate] for r in rounds)}
            if name != "plain":
                entry |= spread([r[f"{name}_{clock}"] for r in rounds])
            summary[name][clock] = entry
    return summary


def markdown(result: dict[str, Any]) -> str:
    """The results as lines to paste into BENCHMARKS.md."""
    env = result["environment"]
    lines = [
        f"`{result['command']}`: {env['cpu']}, {env['cpu_count']} CPUs, torch {env['torch']}, "
        f"lightning {env['lightning']}, {env['threads']} thread(s), load "
        f"{env['loadavg_before'][0]:.1f} -> {env['loadavg_after'][0]:.1f}, {result['date']}",
        "",
        "| workload | clock | plain steps/s | hone steps/s | **hone/plain** (95% CI) "
        "| goal | Lightning steps/s | Lightning/plain (95% CI) |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for name, w in result["workloads"].items():
        s = w["summary"]
        for clock in ("wall", "cpu"):
            cells = [name, "wall clock" if clock == "wall" else "CPU time"]
            cells.append(f"{s['plain'][clock]['median_rate']:,.1f}")
            for arm in ("hone", "lightning"):
                a = s.get(arm, {}).get(clock)
                rate = f"{a['median_rate']:,.1f}" if a else "-"
                ratio = (
                    f"{a['median']:.3f} ({a['ci95_low']:.3f}-{a['ci95_high']:.3f})" if a else "-"
                )
                cells += [rate, f"**{ratio}**" if arm == "hone" and a else ratio]
                if arm == "hone":
                    cells.append(f"{GOALS[name]:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    for name, w in result["workloads"].items():
        for arm in (a for a in ARMS if a != "plain" and a in w["summary"]):
            ratios = ", ".join(f"{r[arm + '_wall']:.3f}" for r in w["rounds"])
            lines.append(f"\n{name}, {arm}/plain per round (wall clock): {ratios}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="steps per arm and round (0: 3000 for the MLP, 300 for the GPT)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of every arm")
    parser.add_argument("--arms", default=",".join(ARMS), help="a subset, plain included")
    parser.add_argument(
        "--hone-override",
        action="append",
        default=[],
        help="a config override for hone's arm, e.g. log.stats_every=0 (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON result file")
    args = parser.parse_args()
    arms = tuple(a for a in ARMS if a in args.arms.split(","))
    if "plain" not in arms:
        parser.error("--arms must include plain (the ratios are to it)")
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the spread needs two ratios)")
    torch.set_num_threads(args.threads)
    import lightning

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # its GPU/TPU banner
    warnings.filterwarnings("ignore", ".*does not have many workers.*")  # num_workers=0 is ours
    warnings.filterwarnings("ignore", ".*LeafSpec.*")  # lightning 2.6 on torch 2.13
    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    loadavg_before = os.getloadavg()
    workloads = {}
    for name in names:
        build, default_steps = WORKLOADS[name]
        w = build(args.steps or default_steps)
        w.hone_overrides += args.hone_override
        rounds = run_rounds(w, args.rounds, args.threads, arms)
        workloads[name] = {"steps": w.steps, "rounds": rounds, "summary": summarize(rounds, arms)}
    result = {
        "command": "python bench/python_loop.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "hone_overrides": args.hone_override,
        "environment": {
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "python": platform.python_version(),
            "threads": args.threads,
            "loadavg_before": loadavg_before,
            "loadavg_after": os.getloadavg(),
        },
        "workloads": workloads,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(markdown(result))
    print(f"\n(written to {args.out})")


if __name__ == "__main__":
    main()
