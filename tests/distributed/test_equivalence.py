"""Two gloo processes train exactly what one process trains with the same global batch.

Each scenario runs once in a 2-process group (ddp or fsdp) and once in this process; the
per-step training losses (all-reduced over ranks before rank 0 logs them) and the final
consolidated weights must agree. Together the scenarios cover both strategies, both model
kinds, gradient accumulation (DDP skips the all-reduce of the first micro-step), clipping and
activation checkpointing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hone.config import load_config
from hone.engine import Trainer
from tests.distributed.helpers import (
    MLP,
    gpt_config,
    max_weight_difference,
    run_group,
    train_losses,
)

SCENARIOS = {
    "mlp-ddp-accum": ("mlp", ["dist.strategy=ddp", "train.grad_accum=2"]),
    "mlp-fsdp-clip": ("mlp", ["dist.strategy=fsdp", "train.clip_norm=0.5"]),
    "gpt-ddp-checkpointing": ("gpt", ["dist.strategy=ddp", "train.activation_checkpointing=true"]),
    "gpt-fsdp-accum-checkpointing": (
        "gpt",
        [
            "dist.strategy=fsdp",
            "train.grad_accum=2",
            "train.clip_norm=0.5",
            "train.activation_checkpointing=true",
        ],
    ),
}
# bf16 compute with fp32 master weights and reductions: close to fp32, not equal.
BF16 = ("gpt", ["dist.strategy=fsdp", "dist.fsdp_param_dtype=bf16", "dist.fsdp_reduce_dtype=fp32"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """{scenario: (2-process run dir, 1-process run dir)}, trained once for the module."""
    folder = tmp_path_factory.mktemp("equivalence")
    gpt_toml, gpt_overrides = gpt_config(folder)
    bases = {"mlp": ("mlp-digits", MLP), "gpt": (gpt_toml, gpt_overrides)}
    group, result = [], {}
    for name, (model, overrides) in SCENARIOS.items():
        config, base = bases[model]
        group.append(
            {"config": config, "overrides": [*base, *overrides], "run_dir": str(folder / name)}
        )
        single = folder / f"{name}-single"
        torch.set_num_threads(1)  # the same kernels' reduction order as each worker's
        Trainer(config=load_config(config, [*base, *overrides]), run_dir=single).fit()
        result[name] = (folder / name, single)
    model, overrides = BF16
    config, base = bases[model]
    group.append(
        {"config": config, "overrides": [*base, *overrides], "run_dir": str(folder / "bf16")}
    )
    result["bf16"] = (folder / "bf16", result["gpt-ddp-checkpointing"][1])
    run_group(group, folder)
    return result


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_two_processes_equal_one(runs: dict[str, tuple[Path, Path]], scenario: str) -> None:
    multi, single = runs[scenario]
    multi_losses, single_losses = train_losses(multi), train_losses(single)
    assert len(multi_losses) == len(single_losses) == 50
    assert multi_losses[-1] < multi_losses[0] - 0.3  # it learned something
    assert max(abs(a - b) for a, b in zip(multi_losses, single_losses, strict=True)) < 1e-5
    # Float rounding, not more: each rank's matmuls take half the batch, which MKL's kernels
    # may sum in another order than the whole batch's (AVX512 cores: up to 1.3e-6 after 50
    # AdamW steps; a wrong reduction moves them by orders of magnitude more)
    assert max_weight_difference(multi, single) < 5e-6


def test_fsdp_bf16_compute_keeps_fp32_weights(runs: dict[str, tuple[Path, Path]]) -> None:
    multi, single = runs["bf16"]
    multi_losses, single_losses = train_losses(multi), train_losses(single)
    assert max(abs(a - b) for a, b in zip(multi_losses, single_losses, strict=True)) < 0.05
    weights = load_file(multi / "model.safetensors")
    assert all(w.dtype == torch.float32 for w in weights.values())
    assert 0 < max_weight_difference(multi, single) < 0.05
