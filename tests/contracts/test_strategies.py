"""Every strategy in `STRATEGIES`, in a gloo group of one process on the CPU: it wraps a tiny GPT
(blocks to shard, an embedding tied to the head) so that outputs and gradients accumulated over
two micro-batches (the first under `no_sync`) equal the plain model's, and its consolidated
`save_model` file loads into a fresh GPT with safetensors. The 2-process equivalence of the
strategies is tests/distributed's business."""

from __future__ import annotations

import copy
import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_model
from torch import nn

from hone.config import DistConfig, ModelConfig, load_config
from hone.distributed import DistContext, ddp, fsdp  # noqa: F401  (register the strategies)
from hone.distributed.strategy import STRATEGIES, init_process_group
from hone.models import ModelSpec, build_model

CPU = torch.device("cpu")
BLOCK_SIZE, VOCAB_SIZE = 8, 11


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def group_of_one(monkeypatch: pytest.MonkeyPatch) -> Iterator[DistContext]:
    """A gloo process group of this process alone; torn down even when the test fails."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    ctx = DistContext()
    init_process_group(ctx, timeout_seconds=30, device=CPU)
    try:
        yield ctx
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def tiny_gpt(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(name="gpt", n_layer=2, n_head=2, n_embd=16, block_size=BLOCK_SIZE)
    spec = ModelSpec(
        task="lm", input_shape=(BLOCK_SIZE,), num_outputs=VOCAB_SIZE, vocab_size=VOCAB_SIZE
    )
    return build_model(cfg, spec)


def full(t: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) value gathered whole; a plain tensor as it is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def test_the_config_offers_exactly_the_registered_strategies() -> None:
    (strategy,) = [f for f in dataclasses.fields(DistConfig) if f.name == "strategy"]
    assert sorted(strategy.metadata["choices"]) == STRATEGIES.names()


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_wraps_trains_and_saves_like_the_plain_model(
    name: str, group_of_one: DistContext, tmp_path: Path
) -> None:
    cfg = load_config(None, ["train.max_steps=1", f"dist.strategy={name}"]).dist
    strategy = STRATEGIES.get(name)(cfg, group_of_one, CPU)
    model = tiny_gpt(seed=0)
    reference = copy.deepcopy(model)
    wrapped = strategy.wrap(model)
    ids = torch.randint(0, VOCAB_SIZE, (4, BLOCK_SIZE), generator=torch.Generator().manual_seed(0))
    for micro, last in ((ids[:2], False), (ids[2:], True)):
        with strategy.no_sync(wrapped) if not last else torch.enable_grad():
            out = wrapped(micro)
            torch.testing.assert_close(out, reference(micro))
            out.square().mean().backward()
        reference(micro).square().mean().backward()
    expected = dict(reference.named_parameters())
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        torch.testing.assert_close(full(param.grad), expected[param_name].grad)

    state = strategy.full_state_dict(model)
    assert state.keys() == reference.state_dict().keys()
    strategy.save_model(model, tmp_path / "model.safetensors")
    fresh = tiny_gpt(seed=1)
    missing, unexpected = load_model(fresh, str(tmp_path / "model.safetensors"))
    assert not missing and not unexpected
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids), reference(ids), rtol=0, atol=0)
    strategy.close()
    assert not dist.is_initialized()
