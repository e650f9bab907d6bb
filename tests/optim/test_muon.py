"""Muon + AdamW as one optimizer: who gets what, scheduling, exact state round-trips, and
Newton–Schulz in the device's fast precision, batched by shape."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from hone.checkpoint import load_optimizer, save_optimizer
from hone.config import OptimConfig, ScheduleConfig
from hone.errors import ConfigError
from hone.hardware import OVERRIDE_ENV
from hone.optim import MuonWithAdamW, build_optimizer, build_schedule, split_muon_params
from hone.optim import muon as muon_module
from hone.optim.muon import Muon, newton_schulz, orthogonalize

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


# Newton–Schulz in the device's fast precision, batched by shape (issue 18).

# Wide, tall, square and a tall/wide pair that batch together; (8, 20) and (20, 8) take the
# Gram form in fp32 (n > 1.5 m), the others the plain iteration.
SHAPES = [(8, 20), (20, 8), (8, 8), (12, 8), (8, 12), (8, 8)]


def matrices(seed: int = 0) -> list[nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [nn.Parameter(0.1 * torch.randn(shape, generator=generator)) for shape in SHAPES]


def updates_after_steps(optimizer_for: Any, num_steps: int = 3) -> list[torch.Tensor]:
    """Each parameter's change over `num_steps` steps on fixed random gradients."""
    params = matrices()
    before = [p.detach().clone() for p in params]
    optimizer = optimizer_for(params)
    generator = torch.Generator().manual_seed(1)
    for _ in range(num_steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()
    return [p.detach() - b for p, b in zip(params, before, strict=True)]


def ours(dtype: torch.dtype, batched: bool) -> Any:
    return lambda params: Muon(params, ns_dtype=dtype, batched=batched, lr=0.02, weight_decay=0.1)


def relative_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(((x - y).norm() / y.norm()).item() for x, y in zip(a, b, strict=True))


class Fp64Muon:
    """torch.optim.Muon's algorithm (torch/optim/_muon.py) written out in fp64: the oracle."""

    def __init__(self, params: list[nn.Parameter], lr: float = 0.02, weight_decay: float = 0.1):
        self.params, self.lr, self.weight_decay = params, lr, weight_decay
        self.buffers = [torch.zeros_like(p, dtype=torch.float64) for p in params]

    def step(self) -> None:
        a, b, c = 3.4445, -4.7750, 2.0315
        for p, buffer in zip(self.params, self.buffers, strict=True):
            assert p.grad is not None
            grad = p.grad.double()
            buffer.lerp_(grad, 1 - 0.95)
            x = grad.lerp(buffer, 0.95)  # Nesterov
            tall = x.size(0) > x.size(1)
            x = x.T if tall else x
            x = x / x.norm().clamp(min=1e-7)
            for _ in range(5):
                gram = x @ x.T
                x = a * x + (b * gram + c * gram @ gram) @ x
            x = x.T if tall else x
            with torch.no_grad():
                p.mul_(1 - self.lr * self.weight_decay)
                p.add_(x.float(), alpha=-self.lr * max(1, p.size(0) / p.size(1)) ** 0.5)


def test_fp32_update_matches_torch_muon_to_bf16_tolerance() -> None:
    torch_muon = updates_after_steps(lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=0.1))
    exact = updates_after_steps(Fp64Muon)
    assert relative_error(torch_muon, exact) < 0.05  # the oracle is torch's algorithm
    for batched in (False, True):
        fp32 = updates_after_steps(ours(torch.float32, batched))
        # Same coefficients, steps, momentum, lr adjustment and decay: torch's bf16 rounding is
        # the only difference (a transposed or mis-scaled update would be off by O(1)) ...
        assert relative_error(fp32, torch_muon) < 0.05
        # ... and fp32 is what ran: far closer to fp64 than torch's bf16 is.
        assert relative_error(fp32, exact) < 1e-4 < relative_error(torch_muon, exact)


def test_batched_equals_unbatched() -> None:
    for dtype in (torch.float32, torch.bfloat16):
        batched = updates_after_steps(ours(dtype, batched=True))
        one_by_one = updates_after_steps(ours(dtype, batched=False))  # bf16: torch's kernel
        # Batched and one-by-one matmuls may sum in another order: the dtype's rounding apart.
        rtol, atol = (1e-5, 1e-7) if dtype == torch.float32 else (1.6e-2, 1e-5)
        for a, b in zip(batched, one_by_one, strict=True):
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def test_matrices_batch_by_shape_up_to_the_element_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    stacks: list[tuple[int, ...]] = []
    real = muon_module.newton_schulz

    def spy(x: torch.Tensor, *args: Any) -> torch.Tensor:
        stacks.append(tuple(x.shape))
        return real(x, *args)

    monkeypatch.setattr(muon_module, "newton_schulz", spy)
    group = torch.optim.Muon(matrices()).param_groups[0]
    updates = [p.detach() for p in matrices()]
    out = orthogonalize(updates, group, torch.float32, batched=True)
    assert stacks == [(2, 8, 20), (2, 8, 8), (2, 8, 12)]  # tall ones transposed to wide
    assert [tuple(o.shape) for o in out] == SHAPES
    stacks.clear()
    monkeypatch.setattr(muon_module, "MAX_BATCH_ELEMENTS", 150)  # one 8x20 or 8x12, two 8x8
    orthogonalize(updates, group, torch.float32, batched=True)
    assert stacks == [(1, 8, 20), (1, 8, 20), (2, 8, 8), (1, 8, 12), (1, 8, 12)]


def test_gram_form_equals_the_plain_iteration_in_fp32() -> None:
    generator = torch.Generator().manual_seed(0)
    full = torch.randn(3, 16, 64, generator=generator)
    nearly_rank_2 = torch.randn(3, 16, 2, generator=generator) @ torch.randn(
        3, 2, 64, generator=generator
    ) + 1e-3 * torch.randn(3, 16, 64, generator=generator)
    coefficients = torch.optim.Muon([nn.Parameter(torch.zeros(2, 2))]).defaults["ns_coefficients"]
    for x in (full, nearly_rank_2):
        exact = newton_schulz(x.double(), coefficients, 5, 1e-7)  # fp64: the plain iteration
        gram = newton_schulz(x, coefficients, 5, 1e-7, gram_form=True)
        torch.testing.assert_close(gram, exact.float(), rtol=0, atol=1e-4)


def test_the_gram_form_runs_where_it_saves_flops(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []
    real = muon_module.gram_newton_schulz

    def spy(x: torch.Tensor, *args: Any) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return real(x, *args)

    monkeypatch.setattr(muon_module, "gram_newton_schulz", spy)
    coefficients = (3.4445, -4.7750, 2.0315)
    for shape, dtype in [((2, 8, 13), torch.float32), ((2, 8, 12), torch.float32)]:
        newton_schulz(torch.randn(shape, dtype=dtype), coefficients, 5, 1e-7)
    newton_schulz(torch.randn(2, 8, 32, dtype=torch.bfloat16), coefficients, 5, 1e-7)
    assert calls == [(2, 8, 13)]  # n > 1.5 m, fp32 only


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_checkpoint_round_trip_gives_an_identical_next_step(tmp_path, precision: str) -> None:
    torch.manual_seed(0)
    tokens = torch.randint(0, 11, (4, 9))
    cfg = OptimConfig(name="muon", lr=1e-2, weight_decay=0.01, muon_precision=precision)

    def step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        lm_loss(model, tokens).backward()
        optimizer.step()

    model = TinyLM()
    optimizer = build_optimizer(cfg, model, CPU)
    for _ in range(3):
        step(model, optimizer)
    save_optimizer(optimizer, tmp_path)
    resumed = copy.deepcopy(model)
    resumed_optimizer = build_optimizer(cfg, resumed, CPU)
    load_optimizer(resumed_optimizer, tmp_path)
    saved, loaded = optimizer.state_dict(), resumed_optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for key, state in saved["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(loaded["state"][key][name]))
    step(model, optimizer)
    step(resumed, resumed_optimizer)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_state_is_torch_muons_own() -> None:
    """hone's Muon keeps torch's state format, with no Newton–Schulz dtype in it: its state
    loads into torch's Muon, and a run resumes on a machine that picks the other dtype."""
    params = matrices()
    ours_fp32 = Muon(params, ns_dtype=torch.float32, batched=True, lr=0.02)
    for p in params:
        p.grad = torch.ones_like(p)
    ours_fp32.step()
    theirs = torch.optim.Muon(matrices(), lr=0.02)
    saved = ours_fp32.state_dict()
    assert all(set(state) == {"momentum_buffer"} for state in saved["state"].values())
    theirs.load_state_dict(saved)
    assert theirs.state_dict()["param_groups"] == saved["param_groups"]


def test_precision_auto_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    def inner_muon(precision: str) -> Muon:
        optimizer = build_optimizer(
            OptimConfig(name="muon", muon_precision=precision), TinyLM(), CPU
        )
        assert isinstance(optimizer, MuonWithAdamW) and isinstance(optimizer.inner[0], Muon)
        return optimizer.inner[0]

    monkeypatch.setenv(OVERRIDE_ENV, "0")
    assert inner_muon("auto").ns_dtype == torch.float32
    assert inner_muon("bf16").ns_dtype == torch.bfloat16
    monkeypatch.setenv(OVERRIDE_ENV, "1")
    assert inner_muon("auto").ns_dtype == torch.bfloat16
    assert inner_muon("fp32").ns_dtype == torch.float32
    assert inner_muon("auto").batched  # on the CPU
