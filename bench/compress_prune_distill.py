"""Pruning of mlp-digits and distillation of the baseline GPT: the numbers of BENCHMARKS.md's
"Compression: structured pruning" and "Compression: distillation" sections, against the
issue's goals.

Pruning: trains mlp-digits (the recipe as is), then compresses it through
`hone.compress.compress` (what `hone compress RUN --prune 0.5 ...` runs) three ways:
structured + `--finetune-steps` steps, the same in `--iterations` rounds, and unstructured +
the same fine-tune. Both sides of each table are measured in this one process, taking turns.

Distillation: trains the teacher, gpt-shakespeare-baseline shortened to `--teacher-steps`
steps (the recipe's 2000 take 3 minutes here), then for each of `--seeds` seeds the same
student (the baseline at `--student-width` wide: about 4x fewer parameters) for
`--student-steps` steps twice: alone (`hone train`) and distilled from the teacher
(`hone compress TEACHER --distill gpt-shakespeare-baseline --model.n_embd=...`). Both
students' validation losses are measured the same way (`LoadedRun.evaluate`).
Run: `nice -n -10 .venv/bin/python bench/compress_prune_distill.py`
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from hone.compress import Distill, Prune, compress  # noqa: E402
from hone.config import load_config  # noqa: E402
from hone.engine import Trainer  # noqa: E402
from hone.engine.inference import LoadedRun  # noqa: E402
from hone.models import num_parameters  # noqa: E402

QUIET = ["log.tensorboard=false", "log.progress=off", "train.checkpoint_every=0"]
GPT = "gpt-shakespeare-baseline"
EVAL_BATCHES = 50  # 50 x 12 windows of 64 tokens: every model's validation loss


def _ratio(table: dict, key: str) -> float:
    """original / compressed: how many times smaller or faster."""
    return table["original"][key] / table["compressed"][key]


def prune(root: Path, args: argparse.Namespace) -> list[str]:
    Trainer(config=load_config("mlp-digits", QUIET), run_dir=root / "mlp").fit()
    methods = {
        f"structured 50%, {args.finetune_steps} steps": Prune(0.5, True, args.finetune_steps),
        f"structured 50%, {args.iterations} rounds": Prune(
            0.5, True, args.finetune_steps, args.iterations
        ),
        f"unstructured 50%, {args.finetune_steps} steps": Prune(0.5, False, args.finetune_steps),
    }
    lines = [
        "| method | parameters (nonzero) | val accuracy | batch-1 ms | batch-64 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i, (name, method) in enumerate(methods.items()):
        table, _ = compress(
            root / "mlp", method, root / f"mlp-{i}", max_drop=100, repeats=args.repeats, log=print
        )
        a, b, gate = table["original"], table["compressed"], table["gate"]
        lines.append(
            f"| {name} | {a['parameters']:,} -> {b['parameters']:,} ({b['nonzero_parameters']:,}; "
            f"{_ratio(table, 'nonzero_parameters'):.2f}x fewer) | {a['metric']['value']:.4f} -> "
            f"{b['metric']['value']:.4f} ({-gate['drop'] + 0.0:+.2f} points) "
            f"| {a['latency_ms_batch1']:.4f} -> {b['latency_ms_batch1']:.4f} "
            f"({_ratio(table, 'latency_ms_batch1'):.2f}x) "
            f"| {a['latency_ms_batch64']:.4f} -> {b['latency_ms_batch64']:.4f} "
            f"({_ratio(table, 'latency_ms_batch64'):.2f}x) |"
        )
        if i == 0:
            goals = [
                ("parameters >= 2x fewer", _ratio(table, "parameters") >= 2),
                ("accuracy drop <= 1 point", gate["drop"] <= 1),
                ("faster at batch 64", _ratio(table, "latency_ms_batch64") > 1.05),
            ]
            lines.append(
                "  goals: " + "; ".join(f"{g}: {'met' if ok else 'MISSED'}" for g, ok in goals)
            )
    return lines


def distill(root: Path, args: argparse.Namespace) -> list[str]:
    steps = args.teacher_steps
    teacher = [f"train.max_steps={steps}", f"schedule.decay_steps={steps}", "train.sample_tokens=0"]
    teacher += [f"train.eval_batches={EVAL_BATCHES}", *QUIET]
    started = time.perf_counter()
    Trainer(config=load_config(GPT, teacher), run_dir=root / "teacher").fit()
    teacher_loss = LoadedRun.load(root / "teacher", "cpu").evaluate("val")["loss"]
    print(
        f"teacher: {steps} steps in {time.perf_counter() - started:.0f} s, val loss {teacher_loss:.4f}"
    )
    losses: dict[str, list[float]] = {"alone": [], "distilled": []}
    sizes = {}
    for seed in range(args.seeds):
        student = [
            f"model.n_embd={args.student_width}",
            f"train.max_steps={args.student_steps}",
            f"schedule.decay_steps={args.student_steps}",
            f"train.seed={seed}",
            f"train.eval_batches={EVAL_BATCHES}",
            "train.sample_tokens=0",
            *QUIET,
        ]
        alone = root / f"alone-{seed}"
        started = time.perf_counter()
        trainer = Trainer(config=load_config(GPT, student), run_dir=alone)
        trainer.fit()
        seconds_alone = time.perf_counter() - started
        losses["alone"].append(LoadedRun.load(alone, "cpu").evaluate("val")["loss"])
        started = time.perf_counter()
        method = Distill(GPT, student, args.temperature, args.alpha)
        table, _ = compress(
            root / "teacher", method, root / f"distilled-{seed}", max_drop=100, repeats=5
        )
        losses["distilled"].append(table["compressed"]["metric"]["value"])
        sizes = {
            "teacher": table["original"]["parameters"],
            "student": num_parameters(trainer.model),
        }
        print(
            f"seed {seed}: alone {losses['alone'][-1]:.4f} ({seconds_alone:.0f} s), distilled "
            f"{losses['distilled'][-1]:.4f} ({time.perf_counter() - started:.0f} s with measuring)"
        )
    wins = sum(d < a for d, a in zip(losses["distilled"], losses["alone"], strict=True))
    lines = [
        f"teacher: {GPT}, {steps} steps, {sizes['teacher']:,} parameters, val loss {teacher_loss:.4f}",
        f"student: n_embd={args.student_width}, {sizes['student']:,} parameters "
        f"({sizes['teacher'] / sizes['student']:.2f}x fewer), {args.student_steps} steps, "
        f"T={args.temperature:g}, alpha={args.alpha:g}",
        "| seed | alone | distilled | difference |",
        "| --- | --- | --- | --- |",
    ]
    for seed, (a, d) in enumerate(zip(losses["alone"], losses["distilled"], strict=True)):
        lines.append(f"| {seed} | {a:.4f} | {d:.4f} | {d - a:+.4f} |")
    mean_a, mean_d = statistics.mean(losses["alone"]), statistics.mean(losses["distilled"])
    lines.append(f"| mean | {mean_a:.4f} | {mean_d:.4f} | {mean_d - mean_a:+.4f} |")
    lines.append(
        f"  goal: distilled lower than alone on every seed: {'met' if wins == args.seeds else 'MISSED'} "
        f"({wins}/{args.seeds})"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--teacher-steps", type=int, default=1500)
    parser.add_argument("--student-width", type=int, default=60)
    parser.add_argument("--student-steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--skip", choices=["prune", "distill"], help="leave one part out")
    parser.add_argument("--json", help="also write the lines to this file")
    args = parser.parse_args()

    torch.set_num_threads(1)  # the steadiest on a shared machine; every side alike
    print(f"torch {torch.__version__}, 1 thread; load average {os.getloadavg()[0]:.2f}")
    started = time.perf_counter()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.skip != "prune":
            lines += prune(Path(tmp), args)
            print(f"pruning done; load average {os.getloadavg()[0]:.2f}")
        if args.skip != "distill":
            lines += distill(Path(tmp), args)
    print(
        f"{time.perf_counter() - started:.0f} s; load average at the end {os.getloadavg()[0]:.2f}"
    )
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(lines, indent=2) + "\n")


if __name__ == "__main__":
    main()
