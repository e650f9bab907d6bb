"""FLOPs per token against a hand count, MFU arithmetic, and the peak-FLOP/s lookup and cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hone.config import ModelConfig
from hone.models import ModelSpec, build_model
from hone.track import throughput
from hone.track.throughput import ThroughputMeter, mfu, peak_flops


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_flops_per_token_matches_a_hand_count(tie: bool, pos: str) -> None:
    L, C, T, V = 2, 8, 4, 10
    cfg = ModelConfig(
        name="gpt", n_layer=L, n_head=2, n_embd=C, block_size=T, tie_embeddings=tie, pos=pos
    )
    model = build_model(cfg, ModelSpec("lm", (T,), V, vocab_size=V))
    # Per block: two LayerNorms (2C each), qkv (3C^2 + 3C), attention proj (C^2 + C),
    # fc (4C^2 + 4C), mlp proj (4C^2 + C); then the final LayerNorm and the V x C head.
    block = 2 * 2 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C)
    n = L * block + 2 * C + V * C  # = 2 * 872 + 16 + 80
    assert n == 1840
    attention = 12 * L * C * T  # q k^T and att v, forward and backward
    assert 6 * n + attention == 11808
    # the model reports the same count itself, and its context length
    assert model.flops_per_token() == 11808 and model.context_length == T


def test_mfu_is_achieved_over_peak() -> None:
    assert mfu(tokens_per_second=1000, flops_per_token=6e6, peak=1.2e10) == pytest.approx(0.5)


def test_configured_peak_wins() -> None:
    assert peak_flops(torch.device("cpu"), 3e12) == (3e12, "train.peak_flops")


@pytest.mark.parametrize(
    ("name", "flops"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-40GB", 312e12),
        ("NVIDIA L4", 121e12),
    ],
)
def test_known_gpus_come_from_the_table(
    name: str, flops: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    value, source = peak_flops(torch.device("cuda"), 0.0)
    assert value == flops and name in source


def test_cpu_rate_is_measured_once_then_read_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(throughput, "MEASURE_SECONDS", 0.05)
    monkeypatch.setattr(throughput, "MATMUL_SIZE", 128)
    rate, source = peak_flops(torch.device("cpu"), 0.0, folder=tmp_path)
    assert 1e8 < rate < 1e13 and "measured float32" in source and "cached" not in source
    assert (tmp_path / "peak_flops.json").is_file()

    def no_measuring(*args: object) -> float:
        raise AssertionError("measured again despite a cached rate")

    monkeypatch.setattr(throughput, "_measure_matmul", no_measuring)
    assert peak_flops(torch.device("cpu"), 0.0, folder=tmp_path) == (rate, source + " (cached)")
    with pytest.raises(AssertionError, match="measured again"):  # bf16 is a separate entry
        peak_flops(torch.device("cpu"), 0.0, precision="bf16", folder=tmp_path)


def test_a_model_without_flops_per_token_gets_no_mfu() -> None:
    meter = ThroughputMeter(None, torch.device("cpu"), "fp32", configured_peak=1e9)
    assert meter.rates(100.0) == {"tokens_per_second": 100.0}
    meter = ThroughputMeter(1e6, torch.device("cpu"), "fp32", configured_peak=1e9)
    assert meter.rates(100.0)["mfu"] == pytest.approx(0.1)
