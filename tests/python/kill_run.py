"""A training script as a user writes it, for the kill/resume test: own model, a torchdata
StatefulDataLoader, `hone.Trainer(...).fit()`; `--resume` continues the run."""

from __future__ import annotations

import sys

import torch
from torch.utils.data import TensorDataset
from torchdata.stateful_dataloader import StatefulDataLoader

import hone
from tests.python.nets import DigitsNet, digits


def main(run_dir: str, resume: bool) -> None:
    torch.manual_seed(0)
    x, y = digits(600)
    generator = torch.Generator().manual_seed(1)
    loader = StatefulDataLoader(
        TensorDataset(x[:500], y[:500]), batch_size=20, shuffle=True, generator=generator
    )
    val = StatefulDataLoader(TensorDataset(x[500:], y[500:]), batch_size=100)
    trainer = hone.Trainer(
        DigitsNet(hidden=24),
        loader,
        val,
        overrides=[
            "train.max_steps=120",
            "train.checkpoint_every=5",
            "train.eval_every=40",
            "train.threads=1",
            "train.deterministic=true",
            "log.progress=off",
            "log.every=5",
            "optim.lr=3e-3",
        ],  # fmt: skip
        optimizer=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
        run_dir=run_dir,
        resume="auto" if resume else False,
    )
    trainer.fit()


if __name__ == "__main__":
    main(sys.argv[1], "--resume" in sys.argv)
