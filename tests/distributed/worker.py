"""A test worker: trains several configs one after another in one process group.

The group is created here, not by hone, so the trainer leaves it open between runs; starting
the processes once for all runs keeps the multi-process tests fast. An entry is either a run
{"config", "overrides", "run_dir", "resume"?} or {"copy": [src, dst]}, a run directory that
rank 0 copies while the others wait.
"""

from __future__ import annotations

import json
import shutil
import sys
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from hone.config import load_config
from hone.distributed.strategy import end_process
from hone.engine import Trainer


def main(spec_path: str) -> None:
    entries = json.loads(Path(spec_path).read_text())
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    for entry in entries:
        if "copy" in entry:
            if dist.get_rank() == 0:
                shutil.copytree(*entry["copy"])
            dist.barrier()
            continue
        cfg = load_config(entry["config"], entry["overrides"])
        Trainer(config=cfg, run_dir=entry["run_dir"], resume=entry.get("resume", False)).fit()
    dist.barrier()  # no rank tears the group down while a peer still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
    # Not the interpreter's teardown, which gloo's threads can race into an abort after
    # every run has finished ("terminate called without an active exception": seen once in
    # a fresh clone's suite, rank 3 of test_sharded_checkpoints' four): as `hone train` ends.
    end_process(0)
