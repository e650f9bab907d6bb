"""Muon + AdamW as one optimizer: who gets what, scheduling, and exact state round-trips."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hone.config import OptimConfig, ScheduleConfig
from hone.errors import ConfigError
from hone.optim import MuonWithAdamW, build_optimizer, build_schedule, split_muon_params

CPU = torch.device("cpu")


class TinyLM(nn.Module):
    """Embedding, two hidden matrices, a norm and a head tied to the embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.hidden = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8, bias=False))
        self.norm = nn.LayerNorm(8)
        self.lm_head = nn.Linear(8, 11, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(self.hidden(self.embed(tokens))))  # (B, T, vocab)


def lm_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])
    return nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())


def test_split_gives_muon_only_hidden_matrices() -> None:
    model = TinyLM()
    muon, adamw = split_muon_params(model)
    assert [id(p) for p in muon] == [id(model.hidden[0].weight), id(model.hidden[2].weight)]
    assert id(model.embed.weight) in {id(p) for p in adamw}
    assert len(muon) + len(adamw) == len(list(model.parameters()))


def test_mlp_head_is_the_last_linear() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    muon, _ = split_muon_params(model)
    assert [id(p) for p in muon] == [id(model[0].weight)]


def test_no_hidden_matrix_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="needs 2-D hidden weight matrices"):
        build_optimizer(OptimConfig(name="muon"), nn.Linear(4, 1), CPU)


def test_groups_have_their_own_lrs_and_one_schedule_drives_both() -> None:
    optimizer = build_optimizer(OptimConfig(name="muon", lr=1e-3, muon_lr=0.02), TinyLM(), CPU)
    assert isinstance(optimizer, MuonWithAdamW)
    assert [g["lr"] for g in optimizer.param_groups] == [
        0.02,
        1e-3,
        1e-3,
    ]  # muon; adamw decay, no-decay
    schedule = build_schedule(ScheduleConfig(name="constant", warmup_steps=4), optimizer, 10)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(
        [0.02 / 4, 1e-3 / 4, 1e-3 / 4]
    )
    optimizer.step()  # no gradients yet: a no-op, but the scheduler wants a step before its own
    schedule.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(
        [0.02 / 2, 1e-3 / 2, 1e-3 / 2]
    )
    assert optimizer.inner[0].param_groups[0]["lr"] == pytest.approx(0.02 / 2)  # shared dicts


def test_state_dict_round_trips_exactly() -> None:
    torch.manual_seed(0)
    tokens = torch.randint(0, 11, (4, 9))
    cfg = OptimConfig(name="muon", lr=1e-2, weight_decay=0.01)

    def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            lm_loss(model, tokens).backward()
            optimizer.step()

    model = TinyLM()
    optimizer = build_optimizer(cfg, model, CPU)
    with torch.no_grad():
        first = lm_loss(model, tokens).item()
    train(model, optimizer, 3)
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    assert len(saved_optimizer["state"]) == len(list(model.parameters()))

    resumed = TinyLM()
    resumed.load_state_dict(saved_model)
    resumed_optimizer = build_optimizer(cfg, resumed, CPU)
    resumed_optimizer.load_state_dict(saved_optimizer)
    train(model, optimizer, 2)
    train(resumed, resumed_optimizer, 2)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert lm_loss(model, tokens).item() < first
