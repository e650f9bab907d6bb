"""A user's script with its own nn.Module and DataLoader, run by torchrun on 2 gloo
processes (tests/distributed/user_loader_worker.py): each rank loads its half of every
global batch, so the run trains what one process trains on the same loader, and a resumed
run (mid-epoch, the epochs' orders drawn again) ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import hone
from tests.distributed.helpers import max_weight_difference, torchrun, train_losses
from tests.distributed.user_loader_worker import BATCH, build, train

STEP6 = "checkpoints/step-0000006"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("user-loader")
    names = ("in-order", "fsdp", "shuffled", "resumed")
    run = {name: folder / name for name in names}
    spec = [
        {"shuffle": False, "run_dir": str(run["in-order"]), "max_steps": 12},
        {"shuffle": False, "run_dir": str(run["fsdp"]), "max_steps": 12, "strategy": "fsdp"},
        {"shuffle": True, "run_dir": str(run["shuffled"]), "max_steps": 12},
        {"copy": [str(run["shuffled"]), str(run["resumed"])]},
        {
            "shuffle": True, "run_dir": str(run["resumed"]), "max_steps": 12,
            "resume": str(run["resumed"] / STEP6),
        },
    ]  # fmt: skip
    (folder / "runs.json").write_text(json.dumps(spec))
    result = torchrun(["-m", "tests.distributed.user_loader_worker", str(folder / "runs.json")])
    first = max(result.stderr.find("Traceback"), 0)
    assert result.returncode == 0, result.stderr[first : first + 6000]
    torch.set_num_threads(1)  # the workers' kernels
    run["one process"] = folder / "one-process"
    train({"shuffle": False, "run_dir": str(run["one process"]), "max_steps": 12})
    return run


@pytest.mark.parametrize("strategy", ["in-order", "fsdp"])  # DDP, and FSDP's shards
def test_two_processes_train_what_one_does_on_the_same_loader(
    runs: dict[str, Path], strategy: str
) -> None:
    two, one = train_losses(runs[strategy]), train_losses(runs["one process"])
    assert len(two) == len(one) == 12
    assert two[-1] < two[0] / 2  # it learned
    assert max(abs(a - b) for a, b in zip(two, one, strict=True)) < 1e-5
    assert max_weight_difference(runs[strategy], runs["one process"]) < 5e-6
    # each rank's batches were half the loader's: the run records the global batch, and
    # counts the global batches' samples (12 steps of 16)
    assert hone.load_run(runs["in-order"]).cfg.train.batch_size == BATCH
    for run in (runs["in-order"], runs["one process"]):
        state = json.loads((run / "checkpoints/step-0000012/trainer.json").read_text())
        assert state["loop"]["samples_seen"] == 12 * BATCH


def test_a_resumed_run_ends_as_the_uninterrupted_one(runs: dict[str, Path]) -> None:
    reference, resumed = train_losses(runs["shuffled"]), train_losses(runs["resumed"])
    assert resumed == reference  # steps 1-6 kept, 7-12 trained again: equal to the bit
    assert max_weight_difference(runs["shuffled"], runs["resumed"]) == 0
    # a shuffled order, a new one each epoch: not the in-order run's losses
    assert reference != train_losses(runs["in-order"])


def test_a_loader_that_cannot_be_dealt_out_is_refused_in_one_line() -> None:
    from torch.utils.data import DataLoader, IterableDataset

    from hone.data.loader_shards import rank_shard
    from hone.errors import ConfigError

    _, loader = build(shuffle=True)

    class Stream(IterableDataset):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield from range(4)

    cases = {
        "do not split evenly over 3": (loader, 3),
        "iterable of batches": ([(torch.zeros(2, 6), torch.zeros(2, 1))], 2),
        "IterableDataset (Stream)": (DataLoader(Stream(), batch_size=2), 2),
        "batch_sampler of its own (list)": (
            DataLoader(loader.dataset, batch_sampler=[[0, 1], [2, 3]]),
            2,
        ),
    }
    for words, (data, world) in cases.items():
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
            rank_shard(data, 0, world, seed=0)
    shard = rank_shard(loader, 1, 2, seed=0)
    assert shard.batch_size == BATCH // 2 and len(shard) == len(loader)
    weighted = torch.utils.data.WeightedRandomSampler([1.0] * 80, 80)
    with pytest.raises(ConfigError, match=r"a sampler of its own \(WeightedRandomSampler\)"):
        rank_shard(DataLoader(loader.dataset, batch_size=16, sampler=weighted), 0, 2, seed=0)


def test_the_ranks_deal_out_each_global_batch_and_each_epoch_draws_a_new_order() -> None:
    from hone.data.loader_batcher import LoaderBatcher
    from hone.data.loader_shards import rank_shard
    from hone.data.loaders import as_loader

    _, loader = build(shuffle=True)
    ids = {tuple(row.tolist()): i for i, row in enumerate(loader.dataset.tensors[0])}
    steps: dict[int, list[list[int]]] = {}
    for rank in (0, 1):
        shard = rank_shard(as_loader(loader, BATCH, True, 0), rank, 2, seed=3)
        batcher = LoaderBatcher(shard, lambda b: (b[0], b[1]), 1, torch.device("cpu"))
        assert batcher.steps_per_epoch == 5
        steps[rank] = [
            [ids[tuple(row.tolist())] for row in batcher.next_step()[0][0]] for _ in range(10)
        ]
    batches = [steps[0][k] + steps[1][k] for k in range(10)]  # the global batches
    assert all(len(set(b)) == BATCH for b in batches)  # the ranks' halves are disjoint
    for epoch in (batches[:5], batches[5:]):  # every sample once an epoch
        assert sorted(i for b in epoch for i in b) == list(range(80))
    assert batches[:5] != batches[5:]  # epoch 1 is not epoch 0 again
