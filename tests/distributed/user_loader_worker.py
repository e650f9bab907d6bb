"""A user's own script under torchrun: an nn.Module and a DataLoader of their own, handed to
`hone.Trainer`. Trains each entry of a JSON list in turn in one process group:
{"shuffle", "run_dir", "max_steps", "resume"?, "strategy"?} or {"copy": [src, dst]} (rank 0 copies)."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hone
from hone.distributed.strategy import end_process

SAMPLES, BATCH = 80, 16  # 5 steps an epoch: 12 steps cross two epoch ends


def build(shuffle: bool) -> tuple[nn.Module, DataLoader]:
    """The same model and loader in every process (and in the test's one-process run)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, 6, generator=g)
    y = x @ torch.randn(6, 1, generator=g) + 0.1 * torch.randn(SAMPLES, 1, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    return model, DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=shuffle)


def train(entry: dict) -> None:
    model, loader = build(entry["shuffle"])
    overrides = [
        f"train.max_steps={entry['max_steps']}", "train.max_epochs=0", "train.checkpoint_every=6",
        "optim.name=adamw", "optim.lr=0.01", "schedule.name=constant", "log.every=1",
        "log.tensorboard=false", "log.progress=off", "log.stats_every=0",
        f"dist.strategy={entry.get('strategy', 'ddp')}",
    ]  # fmt: skip
    resume = entry.get("resume")
    hone.Trainer(
        model, loader, loss="mse", overrides=overrides, run_dir=entry["run_dir"],
        resume=Path(resume) if resume else False,
    ).fit()  # fmt: skip


def main(spec_path: str) -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    for entry in json.loads(Path(spec_path).read_text()):
        if "copy" in entry:
            if dist.get_rank() == 0:
                shutil.copytree(*entry["copy"])
            dist.barrier()
        else:
            train(entry)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
    end_process(0)  # not the interpreter's teardown, which gloo's threads can abort
