"""Training throughput on a busy machine: `train.threads` fixed against auto.

Trains gpt-shakespeare-char (`hone train` in its own process) for `--steps` steps with the
machine idle, then beside one and two other CPU-bound processes (each a pure-Python busy
loop, one core's worth), for each thread setting. Reports tokens/s over the whole run (the
training clock: every step, probes included) and its ratio to the idle run with
`train.threads=auto`. Results go to bench/results/threads_busy.json and a plot beside it.

Run on an otherwise idle machine: `.venv/bin/python bench/threads_busy.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUSY_LOOP = "while True: pass"


def train(steps: int, threads: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "hone", "train", "gpt-shakespeare-char", "--run-dir", tmp,
            f"--train.max_steps={steps}", "--train.eval_every=0", "--train.eval_batches=1",
            "--train.sample_tokens=0", "--log.progress=off", "--log.tensorboard=false",
            f"--train.threads={threads}", "--json", *extra,
        ]  # fmt: skip
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        summary = json.loads((Path(tmp) / "summary.json").read_text())
        events = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").open()]
    probes = [e for e in events if e["split"] == "threads"]
    tokens = summary["steps"] * 32 * 64  # the recipe's batch x block
    return {
        "tokens_per_second": round(tokens / summary["wall_seconds"]),
        "train_seconds": summary["wall_seconds"],
        "final_threads": probes[-1]["threads"] if probes else None,
        "probes": len(probes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--settings", default="auto,1,2", help="train.threads values")
    parser.add_argument("--competitors", default="0,1,2")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "threads_busy.json"))
    args = parser.parse_args()
    results: dict = {"cores": os.cpu_count(), "steps": args.steps, "rows": []}
    for competitors in map(int, args.competitors.split(",")):
        busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(competitors)]
        try:
            time.sleep(0.5)
            for threads in args.settings.split(","):
                row = {"competitors": competitors, "threads": threads}
                row |= train(args.steps, threads, [])
                results["rows"].append(row)
                print(row, flush=True)
        finally:
            for process in busy:
                process.kill()
                process.wait()
    idle = next(r for r in results["rows"] if r["competitors"] == 0 and r["threads"] == "auto")
    for row in results["rows"]:
        row["ratio_to_idle_auto"] = round(row["tokens_per_second"] / idle["tokens_per_second"], 3)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    plot(results, Path(args.out).with_suffix(".png"))
    print(
        "| other CPU-bound processes | train.threads | tokens/s | x idle (auto) | threads at the end |"
    )
    print("| ---: | --- | ---: | ---: | --- |")
    for r in results["rows"]:
        print(f"| {r['competitors']} | {r['threads']} | {r['tokens_per_second']} | "
              f"{r['ratio_to_idle_auto']:.2f} | {r['final_threads'] or r['threads']} |")  # fmt: skip


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    settings = sorted({r["threads"] for r in results["rows"]})
    loads = sorted({r["competitors"] for r in results["rows"]})
    width = 0.8 / len(settings)
    for i, threads in enumerate(settings):
        rows = {r["competitors"]: r for r in results["rows"] if r["threads"] == threads}
        ax.bar([c + i * width for c in loads], [rows[c]["tokens_per_second"] for c in loads],
               width, label=f"train.threads={threads}")  # fmt: skip
    ax.set_xticks([c + width * (len(settings) - 1) / 2 for c in loads], [str(c) for c in loads])
    ax.set(xlabel="other CPU-bound processes", ylabel="tokens/s (gpt-shakespeare-char)",
           title=f"Training beside other processes, {results['cores']} cores")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
