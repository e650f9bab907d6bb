"""How long `hone doctor` takes on a 10,000-step run: the library call and the whole command.

Trains the tiny digits MLP for 10,000 steps (statistics at the default interval), then times
`diagnose(run)` in this process and `hone doctor RUN` as a user runs it (a new Python
process: interpreter start and imports included). Run: `.venv/bin/python bench/doctor_speed.py`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hone.config import load_config  # noqa: E402
from hone.doctor import diagnose  # noqa: E402
from hone.engine import Trainer  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cfg = load_config(
            "mlp-digits",
            ["model.width=32", "train.max_epochs=0", "train.max_steps=10000",
             "train.eval_every=200", "log.progress=on", "log.tensorboard=false"],
        )  # fmt: skip
        Trainer(config=cfg, run_dir=run).fit()
        sizes = {p.name: p.stat().st_size for p in run.iterdir() if p.suffix in (".jsonl",)}
        library = []
        for _ in range(5):
            start = time.perf_counter()
            report = diagnose(run)
            library.append(time.perf_counter() - start)
        command = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "hone", "doctor", str(run)], capture_output=True)
            command.append(time.perf_counter() - start)
        print(
            f"run: {report['steps']} steps, files {sizes}, findings {[f['id'] for f in report['findings']]}"
        )
        print(f"diagnose(run): median {statistics.median(library) * 1e3:.0f} ms of 5")
        print(f"`hone doctor RUN` (new process): median {statistics.median(command):.2f} s of 3")


if __name__ == "__main__":
    main()
