"""What the compression tests share: quiet tiny configs, and training on one thread with the
tokenized corpus kept in the test's temp folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

QUIET = ["log.tensorboard=false", "log.progress=off", "train.checkpoint_every=0"]
# A one-block char GPT: enough to compress, a few seconds to train.
TINY_GPT = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=32",
    "train.batch_size=8",
    "train.max_seconds=0",
    "train.eval_every=0",
    "train.eval_batches=2",
    "train.sample_tokens=0",
    *QUIET,
]


@contextmanager
def one_thread_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One torch thread (on a shared 2-core machine two threads made these steps up to 50x
    slower) and HONE_CACHE_DIR inside the tests' temp folder, both undone afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HONE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hone-cache"))
            yield
    finally:
        torch.set_num_threads(threads)
