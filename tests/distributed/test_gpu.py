"""The CUDA paths: NCCL, bf16 FSDP mixed precision, CPU offload. Skipped without 2 GPUs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hone.config import load_config
from hone.engine import Trainer
from tests.distributed.helpers import (
    ROOT,
    gpt_config,
    max_weight_difference,
    train_losses,
    worker_env,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices"),
]


def hone_train(config: str, run_dir: Path, overrides: list[str]) -> None:
    args = [config, "--nproc", "2", "--run-dir", str(run_dir), *[f"--{o}" for o in overrides]]
    result = subprocess.run(
        [sys.executable, "-m", "hone", "train", *args],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str], Path]:
    folder = tmp_path_factory.mktemp("gpu")
    config, overrides = gpt_config(folder)
    overrides = [*overrides, "train.device=cuda"]
    single = folder / "single"
    Trainer(config=load_config(config, overrides), run_dir=single).fit()
    return config, overrides, single


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_nccl_fp32_matches_one_gpu(gpt: tuple[str, list[str], Path], strategy: str, tmp_path):
    config, overrides, single = gpt
    hone_train(config, tmp_path / "run", [*overrides, f"dist.strategy={strategy}"])
    # TF32 matmuls (on by default on CUDA) round differently with another batch split.
    losses, reference = train_losses(tmp_path / "run"), train_losses(single)
    assert max(abs(a - b) for a, b in zip(losses, reference, strict=True)) < 1e-3
    assert max_weight_difference(tmp_path / "run", single) < 1e-3


@pytest.mark.parametrize("offload", ["false", "true"])
def test_fsdp_bf16_mixed_precision(gpt: tuple[str, list[str], Path], offload: str, tmp_path):
    config, overrides, single = gpt
    run = tmp_path / "run"
    hone_train(
        config,
        run,
        [
            *overrides,
            "dist.strategy=fsdp",
            "dist.fsdp_param_dtype=bf16",
            "dist.fsdp_reduce_dtype=fp32",
            f"dist.cpu_offload={offload}",
        ],
    )
    losses, reference = train_losses(run), train_losses(single)
    assert losses[-1] < losses[0] - 0.3
    assert max(abs(a - b) for a, b in zip(losses, reference, strict=True)) < 0.05
    assert all(w.dtype == torch.float32 for w in load_file(run / "model.safetensors").values())
