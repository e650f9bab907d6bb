"""Federated mlp-digits (issue 14): 10 clients x 20 rounds, IID vs Dirichlet(0.1), FedAvg vs
FedProx, against centralized training on the same data and the same number of steps.

Every client trains local_epochs=5 epochs of batch 32 per round; the centralized run takes
as many optimizer steps (batch 32) as all clients together, on the whole training split.
`--engines` also times the same IID FedAvg run under Flower's Ray simulation engine (needs
`pip install 'flwr[simulation]'`). Prints a markdown table (test accuracy is the held-out
test split; wall time is the whole run, data and imports included, in this process).
Run: `.venv/bin/python bench/federated.py [--engines]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hone.config import load_config  # noqa: E402
from hone.engine import Trainer  # noqa: E402
from hone.federate import federate  # noqa: E402

BASE = ["log.tensorboard=false", "log.progress=off", "train.device=cpu", "train.batch_size=32"]
FEDERATED = [
    "federated.clients=10",
    "federated.rounds=20",
    "federated.local_epochs=5",
    "federated.proximal_mu=0.1",
]


def run_federated(overrides: list[str], run_dir: str) -> tuple[dict[str, Any], float]:
    cfg = load_config("mlp-digits", [*BASE, *FEDERATED, *overrides])
    start = time.perf_counter()
    summary = federate(cfg, run_dir)
    return summary, time.perf_counter() - start


def client_steps(run_dir: str) -> int:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        events = [json.loads(line) for line in f]
    return sum(e["client_steps"] for e in events if e["split"] == "train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engines", action="store_true", help="also time the Ray engine")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        steps = 0
        for partition in ("iid", "dirichlet"):
            for strategy in ("fedavg", "fedprox"):
                run_dir = os.path.join(tmp, f"{partition}-{strategy}")
                overrides = [
                    f"federated.partition={partition}",
                    "federated.alpha=0.1",
                    f"federated.strategy={strategy}",
                ]
                summary, seconds = run_federated(overrides, run_dir)
                steps = steps or client_steps(run_dir)  # the IID run: equal shares
                rows.append((f"{partition}, {strategy}", summary, seconds, "inprocess"))
                print(rows[-1][0], summary["test_accuracy"], f"{seconds:.1f} s", flush=True)
        if args.engines:
            summary, seconds = run_federated(
                ["federated.engine=ray"], os.path.join(tmp, "iid-fedavg-ray")
            )
            rows.append(("iid, fedavg", summary, seconds, "ray"))
        cfg = load_config("mlp-digits", [*BASE, f"train.max_steps={steps}", "train.max_epochs=0"])
        start = time.perf_counter()
        central = Trainer(config=cfg, run_dir=os.path.join(tmp, "central")).fit()
        seconds = time.perf_counter() - start
        rows.append((f"centralized, {steps} steps", central, seconds, "hone train"))
    print("\n| run | engine | test accuracy | best val accuracy | wall time |")
    print("| --- | --- | --- | --- | --- |")
    for name, summary, seconds, engine in rows:
        print(
            f"| {name} | {engine} | {summary['test_accuracy']:.4f} | "
            f"{summary['best_val_metric']:.4f} | {seconds:.1f} s |"
        )


if __name__ == "__main__":
    main()
