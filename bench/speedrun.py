"""Time to a validation loss on 2 CPU cores: gpt-shakespeare-speedrun against the baseline.

Each recipe runs as a user runs it, `hone train RECIPE --train.seed=S` in its own process,
with every evaluation over the whole validation split (`train.eval_batches=0`, the issue's
measure; 491k characters). For each run it records:

- train seconds to the target: the training clock (evaluation excluded) when the validation
  loss reached `--target`. The speedrun evaluates once, at its end; the baseline every 250
  steps, and the step where it crossed the target is interpolated linearly between the two
  evaluations around it (its training clock at that step from the per-step log).
- whole-command seconds: the wall time of the process, from start to exit, evaluations,
  start-up and saving included (the baseline's run evaluates 8 times, the speedrun's once).

Ablation rows (`--ablations`) run the speedrun with one choice undone and report the median
final validation loss and train seconds over the seeds. Results go to
bench/results/speedrun.json and a plot to bench/results/speedrun.png.

Run on an idle machine: `.venv/bin/python bench/speedrun.py --seeds 3 --ablations`; add
`--emulate-avx2 --out bench/results/speedrun_avx2.json` for a CPU without native bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hone.hardware import cpu_name

ROOT = Path(__file__).resolve().parent.parent
HONE = [sys.executable, "-m", "hone"]
TARGET = 1.886
BASELINE, SPEEDRUN = "gpt-shakespeare-baseline", "gpt-shakespeare-speedrun"

# One choice of the speedrun undone per row: (name, overrides). What each choice is and why
# it is there: hone/recipes/gpt-shakespeare-speedrun.toml.
ABLATIONS: list[tuple[str, list[str]]] = [
    # AdamW at the lr tuned for it on this model (gpt-shakespeare-char's), not Muon's 2.4e-2
    ("AdamW (lr 6e-3) instead of Muon", ["optim.name=adamw", "optim.lr=6e-3"]),
    ("learned positions instead of RoPE", ["model.pos=learned"]),
    ("LayerNorm instead of RMSNorm", ["model.norm=layernorm"]),
    ("no QK-norm", ["model.qk_norm=false"]),
    ("GELU instead of ReLU²", ["model.mlp=gelu"]),
    ("tied head", ["model.tie_embeddings=true"]),
    ("default init of output projections", ["model.zero_init_proj=false"]),
    ("cosine schedule instead of WSD", ["schedule.name=cosine"]),
    ("gradient clipping at 1.0", ["train.clip_norm=1.0"]),
    ("SDPA attention instead of plain", ["model.attn=sdpa"]),
    ("fp32 instead of auto precision", ["train.precision=fp32"]),
    ("torch.compile", ["train.compile=true"]),
]


# A CPU without native bf16, emulated on one with it (as bench/muon_step.py does): MKL's fp32
# and oneDNN's bf16 kernels and ATen's vector code capped at AVX2, and hone told the truth.
AVX2_ONLY = {
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "HONE_NATIVE_BF16": "0",
}
ENV: dict[str, str] = {}


def run(recipe: str, seed: int, overrides: list[str], eval_every: int) -> dict:
    """One `hone train` process; its times and validation losses."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            *HONE, "train", recipe, "--run-dir", tmp, "--json",
            f"--train.seed={seed}", "--train.eval_batches=0", f"--train.eval_every={eval_every}",
            "--log.progress=off", *(f"--{o}" for o in overrides),
        ]  # fmt: skip
        start = time.perf_counter()
        env = os.environ | ENV
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
        events = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").open()]
        summary = json.loads((Path(tmp) / "summary.json").read_text())
    train = {e["step"]: e["elapsed"] for e in events if e["split"] == "train"}
    val = [(e["step"], e["loss"]) for e in events if e["split"] == "val"]
    return {
        "recipe": recipe,
        "seed": seed,
        "overrides": overrides,
        "wall_seconds": round(wall, 2),
        "train_seconds": summary["wall_seconds"],
        "final_val_loss": val[-1][1],
        "val": val,
        "train_clock": train,
        "seconds_to_target": seconds_to_target(val, train, TARGET),
        "precision": summary.get("precision"),
        "thread_probes": [e for e in events if e["split"] == "threads"],
    }


def seconds_to_target(
    val: list[tuple[int, float]], clock: dict[int, float], target: float
) -> float | None:
    """The training clock where the validation loss first reached `target`, interpolated
    linearly in steps between two evaluations, and in time between two logged steps."""
    previous = (0, float("inf"))
    for step, loss in val:
        if loss <= target:
            if previous[1] == float("inf"):
                crossing = float(step)
            else:
                fraction = (previous[1] - target) / (previous[1] - loss)
                crossing = previous[0] + fraction * (step - previous[0])
            return clock_at(clock, crossing)
        previous = (step, loss)
    return None


def clock_at(clock: dict[int, float], step: float) -> float:
    steps = sorted(clock)
    lower = max((s for s in steps if s <= step), default=0)
    upper = min((s for s in steps if s >= step), default=steps[-1])
    low_t = clock.get(lower, 0.0)
    if upper == lower:
        return low_t
    return low_t + (clock[upper] - low_t) * (step - lower) / (upper - lower)


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if len(known) == len(values) else None


def summarize(rows: list[dict]) -> dict:
    return {
        "seconds_to_target": median([r["seconds_to_target"] for r in rows]),
        "train_seconds": statistics.median(r["train_seconds"] for r in rows),
        "wall_seconds": statistics.median(r["wall_seconds"] for r in rows),
        "final_val_loss": statistics.median(r["final_val_loss"] for r in rows),
        "val_loss_spread": [min(r["final_val_loss"] for r in rows), max(r["final_val_loss"] for r in rows)],
        "reached": sum(r["seconds_to_target"] is not None for r in rows),
        "runs": len(rows),
    }  # fmt: skip


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(13, 4.8))
    for name, color in ((BASELINE, "tab:gray"), (SPEEDRUN, "tab:red")):
        for row in results["runs"].get(name, []):
            xs = [
                clock_at({int(k): v for k, v in row["train_clock"].items()}, s)
                for s, _ in row["val"]
            ]
            curves.plot(xs, [loss for _, loss in row["val"]], "o-", color=color, alpha=0.7,
                        label=f"{name} (seed {row['seed']})")  # fmt: skip
    curves.axhline(TARGET, color="black", lw=0.8, ls="--", label=f"target {TARGET}")
    curves.set(xlabel="train seconds (evaluation excluded)", ylabel="validation loss (whole split)",
               title="Validation loss against training time, 2 CPU cores")  # fmt: skip
    curves.legend(fontsize=7)
    ablations = results.get("ablations", {})
    if ablations:
        names = [SPEEDRUN, *ablations]
        losses = [results["summary"][SPEEDRUN]["final_val_loss"]]
        losses += [a["final_val_loss"] for a in ablations.values()]
        seconds = [results["summary"][SPEEDRUN]["train_seconds"]]
        seconds += [a["train_seconds"] for a in ablations.values()]
        bars.barh(names, losses, color=["tab:red"] + ["tab:blue"] * len(ablations))
        for i, (loss, train_s) in enumerate(zip(losses, seconds, strict=True)):
            bars.text(loss, i, f" {train_s:.1f} s", va="center", fontsize=7)
        bars.axvline(TARGET, color="black", lw=0.8, ls="--")
        bars.set(xlabel="median final validation loss (label: median train seconds)",
                 title="One choice undone at a time",
                 xlim=(min(losses) - 0.05, max(losses) + 0.05))  # fmt: skip
        bars.invert_yaxis()
        bars.tick_params(axis="y", labelsize=7)
    else:
        bars.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ablations", action="store_true")
    parser.add_argument("--ablation-seeds", type=int, default=0, help="default: --seeds")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--emulate-avx2",
        action="store_true",
        help="emulate a CPU without native bf16 (AVX2 kernels only; hone picks fp32)",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "speedrun.json"))
    parser.add_argument("--replot", action="store_true", help="redraw --out's plot only")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(Path(args.out).read_text()), Path(args.out).with_suffix(".png"))
        return
    seeds = range(args.seeds)
    if args.emulate_avx2:
        ENV.update(AVX2_ONLY)
    results: dict = {"target": TARGET, "runs": {}, "summary": {}, "cpu": cpu_name(), "env": ENV}
    recipes = [(SPEEDRUN, 0)] + ([] if args.skip_baseline else [(BASELINE, 250)])
    for seed in seeds:  # alternated, so that a change in the machine's load hits both
        for recipe, eval_every in recipes:
            row = run(recipe, seed, [], eval_every)
            results["runs"].setdefault(recipe, []).append(row)
            print(f"{recipe} seed {seed}: val {row['final_val_loss']:.4f}, to target "
                  f"{row['seconds_to_target']} s, train {row['train_seconds']:.1f} s, "
                  f"command {row['wall_seconds']:.1f} s", flush=True)  # fmt: skip
    for recipe, rows in results["runs"].items():
        results["summary"][recipe] = summarize(rows)
    if args.ablations:
        results["ablations"] = {}
        for name, overrides in ABLATIONS:
            rows = [
                run(SPEEDRUN, s, overrides, 0) for s in range(args.ablation_seeds or args.seeds)
            ]
            results["ablations"][name] = summarize(rows) | {"overrides": overrides}
            print(f"ablation {name}: {results['ablations'][name]}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    plot(results, Path(args.out).with_suffix(".png"))
    print(table(results))


def table(results: dict) -> str:
    s = results["summary"]
    lines = ["| recipe | train s to target | whole command s | final val loss (min-max) | reached |",
             "| --- | ---: | ---: | --- | ---: |"]  # fmt: skip
    for recipe, r in s.items():
        spread = "-".join(f"{v:.4f}" for v in r["val_loss_spread"])
        lines.append(f"| {recipe} | {r['seconds_to_target']} | {r['wall_seconds']:.1f} | "
                     f"{r['final_val_loss']:.4f} ({spread}) | {r['reached']}/{r['runs']} |")  # fmt: skip
    if (
        BASELINE in s
        and SPEEDRUN in s
        and s[BASELINE]["seconds_to_target"]
        and s[SPEEDRUN]["seconds_to_target"]
    ):
        lines.append(f"\nspeed-up, train time to target: "
                     f"{s[BASELINE]['seconds_to_target'] / s[SPEEDRUN]['seconds_to_target']:.2f}x; "
                     f"whole command: {s[BASELINE]['wall_seconds'] / s[SPEEDRUN]['wall_seconds']:.2f}x")  # fmt: skip
    if results.get("ablations"):
        lines += [
            "",
            "| speedrun with | median final val loss | train s | reached |",
            "| --- | ---: | ---: | ---: |",
        ]
        base = s[SPEEDRUN]
        lines.append(
            f"| (nothing undone) | {base['final_val_loss']:.4f} | {base['train_seconds']:.1f} | {base['reached']}/{base['runs']} |"
        )
        for name, r in results["ablations"].items():
            lines.append(
                f"| {name} | {r['final_val_loss']:.4f} | {r['train_seconds']:.1f} | {r['reached']}/{r['runs']} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
