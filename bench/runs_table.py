"""How long `hone runs` takes on a folder of a thousand runs.

Trains one mlp-digits run of 2,000 steps, copies its files into 1,000 run directories (950
finished; 50 left "running" by a process that is gone, with no summary, so that their steps
come from the tail of metrics.jsonl as a killed run's do), then times `list_runs` in this
process (median of 5), `hone runs DIR` and `hone runs DIR --json` as a user runs them (a new
Python process, imports included; median of 3), and, for scale, reading every metrics.jsonl
in full, which is what the command avoids. Run: `.venv/bin/python bench/runs_table.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hone.config import load_config  # noqa: E402
from hone.engine import Trainer  # noqa: E402
from hone.run_files import RunFiles  # noqa: E402
from hone.runs import list_runs  # noqa: E402

NUM_RUNS, NUM_KILLED = 1000, 50


def make_folder(root: Path) -> Path:
    source = RunFiles(root / "source")
    cfg = load_config(
        "mlp-digits",
        ["model.width=32", "train.max_epochs=0", "train.max_steps=2000", "train.eval_every=100",
         "log.progress=off", "log.tensorboard=false", "train.checkpoint_every=0"],
    )  # fmt: skip
    Trainer(config=cfg, run_dir=source.root).fit()
    runs = root / "runs"
    for i in range(NUM_RUNS):
        target = RunFiles(runs / f"mlp-digits-{i:04d}")
        target.root.mkdir(parents=True)
        for name in ("config", "metrics", "stats", "summary", "status"):
            shutil.copy(getattr(source, name), getattr(target, name))
        if i < NUM_KILLED:  # SIGKILLed: no summary, "running" from a pid that is gone
            target.summary.unlink()
            status = json.loads(target.status.read_text())
            status.update(state="running", pid=2**22 + i, process_start="0")
            target.status.write_text(json.dumps(status))
    return runs


def timed(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        runs = make_folder(Path(tmp))
        sizes = {p.name: p.stat().st_size for p in (runs / "mlp-digits-0100").iterdir()}
        records = list_runs([runs])
        states = {r.status.state: 0 for r in records}
        for r in records:
            states[r.status.state] += 1
        library = timed(lambda: list_runs([runs]), 5)
        command = [sys.executable, "-m", "hone", "runs", str(runs)]
        table = timed(lambda: subprocess.run(command, capture_output=True, check=True), 3)
        as_json = timed(
            lambda: subprocess.run([*command, "--json"], capture_output=True, check=True), 3
        )

        def read_all_metrics() -> None:
            for path in runs.glob("*/metrics.jsonl"):
                [json.loads(line) for line in path.read_text().splitlines()]

        everything = timed(read_all_metrics, 3)
        print(f"{len(records)} runs {states}; files of one run (bytes): {sizes}")
        print(
            f"list_runs: median {library * 1e3:.0f} ms of 5 ({library / len(records) * 1e6:.0f} us a run)"
        )
        print(f"`hone runs DIR` (new process): median {table:.2f} s of 3")
        print(f"`hone runs DIR --json` (new process): median {as_json:.2f} s of 3")
        print(f"for scale, parsing every metrics.jsonl: median {everything:.2f} s of 3")


if __name__ == "__main__":
    main()
