"""`train.compile`: hone's models trace as one graph in training (the saved-tensor recipes of
hone.models.recompute, the chunked loss and the LoRA product inside it, no graph break), and
a compiled run trains as the eager one does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import hone
from hone.config import ModelConfig
from hone.finetune.lora import LoRA
from hone.models import ModelSpec, build_model
from hone.track.run import read_metrics

VOCAB = 96


def tiny(name: str, lora: bool) -> nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(name=name, n_layer=2, n_head=4, n_embd=32, block_size=16)
    model = build_model(config, ModelSpec("lm", (16,), VOCAB, VOCAB)).train()
    if lora:
        LoRA(4, 8, 0.0, "all-linear", "fp32").convert(model)
    return model


@pytest.mark.parametrize(("name", "lora"), [("gpt", False), ("llama", False), ("llama", True)])
def test_a_training_forward_traces_as_one_graph(name: str, lora: bool) -> None:
    """A graph break splits what torch.compile fuses; each `recomputed` context broke it
    twice a block before (the saved-tensor hooks' lookup), the chunked loss once."""
    model = tiny(name, lora)
    idx = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    try:
        explained = torch._dynamo.explain(model)(idx, targets=idx)
    finally:
        torch._dynamo.reset()
    assert explained.graph_break_count == 0, [str(b.reason) for b in explained.break_reasons]
    assert explained.graph_count == 1


def test_a_compiled_run_trains_as_the_eager_one(tmp_path: Path) -> None:
    """A Llama with LoRA adapters, 4 steps, compiled and not: the same losses, and the
    compiled run's steps went through one graph that dynamo compiled, with no break."""
    from torch._dynamo.utils import counters

    losses = {}
    compiled_graphs = graph_breaks = 0
    for compiled in (False, True):
        run = tmp_path / f"compiled-{compiled}"
        overrides = [
            "model.name=llama", "model.n_layer=2", "model.n_head=4", "model.n_embd=32",
            "model.block_size=32", "data.name=shakespeare", "lora.enabled=true", "lora.rank=4",
            "train.max_steps=4", "train.batch_size=4", "train.eval_every=0",
            "train.sample_tokens=0", f"train.compile={str(compiled).lower()}",
            "train.precision=fp32", "log.progress=off", "log.tensorboard=false", "log.every=1",
        ]  # fmt: skip
        counters.clear()
        try:
            hone.Trainer(config=None, overrides=overrides, run_dir=run).fit()
            compiled_graphs += counters["stats"]["unique_graphs"]
            graph_breaks += sum(counters["graph_break"].values())
        finally:
            torch._dynamo.reset()
        losses[compiled] = [e["loss"] for e in read_metrics(run) if e["split"] == "train"]
    assert compiled_graphs >= 1 and graph_breaks == 0, (compiled_graphs, graph_breaks)
    assert len(losses[True]) == 4 and len(set(losses[True])) == 4  # four batches, four losses
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
