"""Two gloo processes fine-tune LoRA adapters on chat data exactly as one process does with
the same global batch: the loss is the mean over every answer token of the global batch,
whichever rank holds it (the ranks' answer-token counts are summed before each micro-batch's
share is taken, Task.accumulation_weights), not the mean of the ranks' means.

The examples' answers are 1 to 40 words long, so the two ranks hold very different numbers
of answer tokens in most steps, and a mean of the ranks' means would differ by far more than
the tolerance.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from hone.checkpoint import saved_frozen_base, step_dir_name
from hone.config import load_config
from hone.data import build_data
from hone.data.base import ExampleData
from hone.data.batching import IGNORE_INDEX, ExampleBatcher
from hone.engine import Trainer
from hone.track.run import read_metrics
from tests.checkpoint.helpers import weights
from tests.distributed.helpers import run_group, train_losses

pytest.importorskip("transformers")

STEPS = 6


def chat_records(folder: Path) -> Path:
    """24 prompt/completion records whose completions are 1 to 40 words."""
    rng = random.Random(0)
    words = "the a river stone light king night sword crown love of to and".split()
    lines = []
    for i in range(24):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
        answer = " ".join(rng.choice(words) for _ in range(1 if i % 3 == 0 else rng.randint(2, 40)))
        lines.append(json.dumps({"prompt": prompt, "completion": " " + answer}))
    path = folder / "chat.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def overrides(base: Path, records: Path, *extra: str) -> list[str]:
    return [
        "model.name=pretrained", f"model.path={base}", "model.block_size=128",
        "data.name=chat", f"data.path={records}", f"data.tokenizer_path={base}", "data.val_fraction=0", "data.pack=false",
        "lora.enabled=true", "lora.rank=4", "lora.targets=all-linear", "optim.name=adamw",
        "optim.lr=1e-2", f"train.max_steps={STEPS}", "train.max_epochs=0", "train.batch_size=8",
        "train.eval_every=0", "train.sample_tokens=0", "train.precision=fp32",
        "log.every=1", "log.tensorboard=false", "log.progress=off", "log.stats_every=0", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(
    tiny_checkpoint: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str]]:
    """(folder, overrides): the runs "ddp", "accum" and "whole" in the folder.

    The global batch of 8 examples: two ranks of 4, one process with 2 micro-batches of the
    same 4 (ExampleBatcher cuts a batch so), or one process with all 8 at once."""
    folder = tmp_path_factory.mktemp("ddp")
    base = tiny_checkpoint("llama")
    common = overrides(base, chat_records(folder))
    ddp = {"config": None, "overrides": [*common, "train.checkpoint_every=3"]}
    run_group(
        [
            {**ddp, "run_dir": str(folder / "ddp")},
            # the same run again from its step-3 checkpoint (adapters only, sharded)
            {"copy": [str(folder / "ddp"), str(folder / "resumed")]},
            {
                **ddp,
                "run_dir": str(folder / "resumed"),
                "resume": str(folder / "resumed/checkpoints" / step_dir_name(3)),
            },
        ],
        folder,
    )
    torch.set_num_threads(1)  # the workers' kernels
    for name, extra in {"accum": ["train.grad_accum=2"], "whole": []}.items():
        Trainer(config=load_config(None, [*common, *extra]), run_dir=folder / name).fit()
    return folder, common


def test_two_processes_weigh_answer_tokens_as_one(runs: tuple[Path, list[str]]) -> None:
    folder, common = runs
    ddp, accum, whole = (train_losses(folder / n) for n in ("ddp", "accum", "whole"))
    assert len(ddp) == len(accum) == len(whole) == STEPS
    assert ddp[-1] < ddp[0] - 0.1  # it learned something
    assert max(abs(a - b) for a, b in zip(ddp, accum, strict=True)) < 1e-6
    assert max(abs(a - b) for a, b in zip(ddp, whole, strict=True)) < 1e-5
    # The adapters alone, as one process writes them, and the same ones.
    ours, theirs = load_file(folder / "ddp/model.safetensors"), weights(folder / "accum")
    assert ours.keys() == theirs.keys() and all("lora_" in k for k in ours)
    assert saved_frozen_base(folder / "ddp/model.safetensors") is not None
    assert max((ours[k] - theirs[k]).abs().max().item() for k in theirs) < 1e-6

    # The test means something: the halves of the first batch hold unequal answer tokens.
    cfg = load_config(None, common)
    data = build_data(cfg)
    assert isinstance(data, ExampleData)
    halves = ExampleBatcher(data.train, 8, cfg.train.seed, data.pad_id, grad_accum=2).next_step()
    counts = [int((y != IGNORE_INDEX).sum()) for _, y in halves]
    assert max(counts) > 1.5 * min(counts), counts


def test_two_processes_checkpoint_the_adapters_alone_and_resume_exactly(
    runs: tuple[Path, list[str]],
) -> None:
    """Under --nproc too, a checkpoint holds what trains (each rank's shards: the adapters
    and their optimizer state, never the frozen base) and resumes to the same adapters."""
    folder, _ = runs
    checkpoints = sorted((folder / "ddp/checkpoints").glob("step-*"))
    assert len(checkpoints) == 2
    for checkpoint in checkpoints:
        names: set[str] = set()
        for shard in (checkpoint / "sharded").glob("*.safetensors"):
            with safe_open(str(shard), framework="pt") as f:
                names |= set(f.keys())
        model_part = {n.removeprefix("model/") for n in names if n.startswith("model/")}
        assert model_part and all("lora_" in n for n in model_part), sorted(model_part)
        assert any(n.startswith("optim/") for n in names)
        assert (checkpoint / "frozen_base.json").is_file()
    resumed = load_file(folder / "resumed/model.safetensors")
    ddp = load_file(folder / "ddp/model.safetensors")
    assert resumed.keys() == ddp.keys()
    assert all(torch.equal(resumed[k], ddp[k]) for k in ddp)
    assert train_losses(folder / "resumed") == train_losses(folder / "ddp")


def test_throughput_counts_real_tokens_not_padding(runs: tuple[Path, list[str]]) -> None:
    """tokens/s over samples/s (one step a log line: the same seconds) is the real tokens of
    the step's batch over its examples, however far the batch is padded."""
    folder, common = runs
    cfg = load_config(None, common)
    data = build_data(cfg)
    assert isinstance(data, ExampleData)
    batcher = ExampleBatcher(data.train, 8, cfg.train.seed, data.pad_id)
    for name in ("whole", "ddp"):
        events = [e for e in read_metrics(folder / name) if e["split"] == "train"]
        batcher.load_state_dict({"epoch": 0, "position": 0})
        for event in events:
            before = batcher.real_tokens
            ((x, _),) = batcher.next_step()
            real, padded = batcher.real_tokens - before, x.numel()
            assert real < 0.8 * padded  # the padding is no small part
            ratio = event["tokens_per_second"] / event["samples_per_second"]
            assert ratio == pytest.approx(real / 8, rel=1e-9), (name, event["step"])
