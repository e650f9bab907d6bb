"""What the federated tests share: tiny quiet configs, and one torch thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

pytest.importorskip("flwr", reason="federated training needs the 'federated' extra")
pytest.importorskip("flwr_datasets", reason="federated training needs the 'federated' extra")

QUIET = ["log.tensorboard=false", "log.progress=off", "train.device=cpu"]
# mlp-digits at width 16: a round of a few steps takes milliseconds.
TINY = ["model.width=16", *QUIET]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine two threads made tiny steps far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
