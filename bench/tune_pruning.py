"""ASHA against no pruning: the same tuning run (trials, sampler, seed) with and without
successive-halving pruning; compute spent (total optimizer steps over all trials) and the best
value reached.

Run:  .venv/bin/python bench/tune_pruning.py --recipe mlp-digits --trials 30 --seeds 0 1 2
      .venv/bin/python bench/tune_pruning.py --recipe gpt-shakespeare-baseline --trials 16 \
          --sampler random --override train.max_steps=200 --override train.eval_every=20 \
          --override train.eval_batches=5 --override schedule.decay_steps=200 \
          --override train.sample_tokens=0

Prints a Markdown table (one row per seed and pruner) and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import optuna  # noqa: E402
import tomli_w  # noqa: E402

from hone.config.loader import read_source  # noqa: E402
from hone.tune import TuneOptions, tune  # noqa: E402

# What each recipe tunes: the usual first knobs (learning rate, width, regularization).
SPACES: dict[str, dict[str, Any]] = {
    "mlp": {
        "optim.lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
        "model.width": {"type": "int", "low": 16, "high": 256, "log": True},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "optim.weight_decay": {"type": "float", "low": 1e-5, "high": 0.1, "log": True},
    },
    "gpt": {
        "optim.lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
        "optim.weight_decay": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.3},
        "schedule.warmup_steps": {"type": "int", "low": 0, "high": 50, "step": 10},
    },
}


def write_config(recipe: str, path: Path) -> str:
    raw, _ = read_source(recipe)
    kind = "gpt" if raw.get("model", {}).get("name") == "gpt" else "mlp"
    raw.setdefault("log", {})["tensorboard"] = False
    raw["tune"] = {"space": SPACES[kind], "report": False}
    path.write_text(tomli_w.dumps(raw))
    return kind


def run(
    config: Path, pruner: str, args: argparse.Namespace, seed: int, root: Path
) -> dict[str, Any]:
    overrides = [
        f"tune.pruner={pruner}",
        f"tune.sampler={args.sampler}",
        f"tune.seed={seed}",
        f"tune.min_resource={args.min_resource}",
        f"tune.reduction_factor={args.reduction_factor}",
        *args.override,
    ]
    start = time.perf_counter()
    result = tune(
        TuneOptions(
            str(config),
            overrides,
            trials=args.trials,
            study=f"{pruner}-{seed}",
            directory=str(root / f"{pruner}-{seed}"),
        )
    )
    seconds = time.perf_counter() - start
    trials = optuna.load_study(study_name=result.study, storage=result.storage).trials
    return {
        "pruner": pruner,
        "seed": seed,
        "trials": len(trials),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "steps": sum(int(t.user_attrs.get("steps", 0)) for t in trials),
        "best": result.best[0].values[0],
        "best_params": result.best[0].params,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="mlp-digits")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument(
        "--min-resource", type=int, default=0, help="steps; 0: ~5%% of a trial, at an evaluation"
    )
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--override", action="append", default=[], help="a.b=value, every trial")
    parser.add_argument("--pruners", nargs="+", default=["none", "successive-halving"])
    parser.add_argument("--out", default="", help="JSON file for the numbers")
    parser.add_argument("--dir", default="", help="where the studies go (default: a temp dir)")
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="hone-bench-tune-"))
    root.mkdir(parents=True, exist_ok=True)
    config = root / f"{args.recipe}.toml"
    write_config(args.recipe, config)
    if not args.min_resource:
        # The first rung after about 5% of a full trial, at an evaluation.
        from hone.tune.configs import TrialConfigs

        cfg = TrialConfigs(str(config), args.override).base
        every, planned = _eval_interval_and_steps(cfg)
        args.min_resource = every * max(1, math.ceil(planned / 20 / every))
    rows = []
    for seed in args.seeds:
        for pruner in args.pruners:
            rows.append(run(config, pruner, args, seed, root))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.recipe}: {args.trials} trials, sampler {args.sampler}, metric val_loss")
    print("| seed | pruner | trials pruned | total steps | best val_loss | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['seed']} | {r['pruner']} | {r['pruned']}/{r['trials']} | {r['steps']} "
            f"| {r['best']:.4f} | {r['seconds']} |"
        )
    for seed in args.seeds if len(args.pruners) == 2 else []:
        none, asha = (r for r in rows if r["seed"] == seed)
        print(
            f"seed {seed}: ASHA spent {none['steps'] / asha['steps']:.1f}x less compute; "
            f"best {asha['best']:.4f} vs {none['best']:.4f} ({100 * (asha['best'] / none['best'] - 1):+.1f}%)"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


def _eval_interval_and_steps(cfg: Any) -> tuple[int, int]:
    """Steps between evaluations and steps of a full trial."""
    from hone.data import build_data

    t = cfg.train
    if t.eval_every:  # language models evaluate only on train.eval_every
        return t.eval_every, t.max_steps
    per_epoch = max(1, len(build_data(cfg).train[0]) // t.batch_size)
    return per_epoch, min(b for b in (t.max_steps, t.max_epochs * per_epoch) if b)


if __name__ == "__main__":
    main()
