"""FLOPs per token against a hand count, MFU arithmetic, the peak-FLOP/s lookup and cache, and
the guards that keep a measured peak honest (load, a peak that training outruns)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from hone.config import ModelConfig
from hone.models import ModelSpec, build_model
from hone.track import throughput
from hone.track.throughput import (
    Measurement,
    ThroughputMeter,
    cache_key,
    mfu,
    peak_flops,
)

CPU = torch.device("cpu")


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


def test_the_meter_counts_the_context_trained_when_the_model_takes_one() -> None:
    cfg = ModelConfig(name="gpt", n_layer=2, n_head=2, n_embd=8, block_size=16)
    model = build_model(cfg, ModelSpec("lm", (16,), 10, vocab_size=10))
    cpu = torch.device("cpu")
    at_4 = ThroughputMeter.for_model(model, cpu, "fp32", context=4).flops_per_token
    assert at_4 == model.flops_per_token(4) == model.flops_per_token() - 12 * 2 * 8 * 12

    class Own(torch.nn.Module):  # a user's model whose count takes no context
        def flops_per_token(self) -> float:
            return 123.0

    assert ThroughputMeter.for_model(Own(), cpu, "fp32", context=4).flops_per_token == 123.0


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
    monkeypatch.setattr(throughput, "MIN_CPU_SHARE", 0.0)  # other tests may load the machine
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


class FakeMeasurements:
    """Stands in for `_measure_matmul`: hands out the given measurements and counts calls."""

    def __init__(self, *measurements: Measurement) -> None:
        self.measurements, self.calls = list(measurements), 0

    def __call__(self, *args: object) -> Measurement:
        self.calls += 1
        return self.measurements.pop(0)


def cached_table(folder: Path) -> dict[str, float]:
    file = folder / "peak_flops.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def test_the_cpu_share_tells_a_measurement_under_load() -> None:
    def measure(cpu_clock: Callable[[], float]) -> Measurement:
        return throughput._measure_matmul(CPU, torch.float32, 0.02, cpu_clock)

    # a process that got no CPU time while the bursts ran: the cores were someone else's
    assert measure(lambda: 0.0).spoiled
    # a process that got all of its threads' time
    assert not measure(itertools.count(0.0, 1e6).__next__).spoiled


def test_a_peak_measured_under_load_is_retried_and_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = FakeMeasurements(Measurement(44e9, 0.5), Measurement(40e9, 0.45))
    monkeypatch.setattr(throughput, "_measure_matmul", loaded)
    rate, source = peak_flops(CPU, 0.0, folder=tmp_path)
    assert loaded.calls == throughput.MEASURE_TRIES == 2
    assert rate == 44e9 and "not cached" in source and "50%" in source
    assert cached_table(tmp_path) == {}
    # a clean measurement is cached, and read back without measuring
    clean = FakeMeasurements(Measurement(90e9, 0.97))
    monkeypatch.setattr(throughput, "_measure_matmul", clean)
    assert peak_flops(CPU, 0.0, folder=tmp_path)[0] == 90e9
    assert cached_table(tmp_path) == {cache_key(CPU, torch.float32): 90e9}
    assert peak_flops(CPU, 0.0, folder=tmp_path) == (90e9, source.split(" while")[0] + " (cached)")
    assert clean.calls == 1


def test_a_spoiled_try_then_a_clean_one_caches_the_clean_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeMeasurements(Measurement(44e9, 0.5), Measurement(90e9, 0.99))
    monkeypatch.setattr(throughput, "_measure_matmul", fake)
    assert peak_flops(CPU, 0.0, folder=tmp_path)[0] == 90e9
    assert cached_table(tmp_path) == {cache_key(CPU, torch.float32): 90e9}


def poisoned_meter(folder: Path) -> ThroughputMeter:
    """A meter whose cached peak (44 GFLOP/s, measured under load) is below what it will see."""
    (folder / "peak_flops.json").write_text(json.dumps({cache_key(CPU, torch.float32): 44e9}))
    return ThroughputMeter(1e6, CPU, "fp32", folder=folder)


def test_training_faster_than_a_poisoned_cached_peak_re_measures_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = FakeMeasurements(Measurement(200e9, 1.0))
    monkeypatch.setattr(throughput, "_measure_matmul", fresh)
    meter = poisoned_meter(tmp_path)
    assert meter.rates(1e5)["mfu"] == pytest.approx(0.5)  # 1e11 FLOP/s of a 2e11 peak
    assert fresh.calls == 1 and meter.peak == 200e9
    assert "re-measured" in meter.peak_source and "4.4e+10" in meter.peak_source
    # the clean re-measurement replaces the poisoned entry for later runs
    assert cached_table(tmp_path) == {cache_key(CPU, torch.float32): 200e9}
    assert meter.summary() == {"peak_flops": 200e9, "peak_source": meter.peak_source}


def test_mfu_never_exceeds_one_even_above_a_fresh_measurement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = FakeMeasurements(Measurement(60e9, 1.0))
    monkeypatch.setattr(throughput, "_measure_matmul", fresh)
    meter = poisoned_meter(tmp_path)
    assert meter.rates(1e5)["mfu"] == 1.0  # 1e11 FLOP/s achieved, above both 44e9 and 60e9
    assert meter.peak == 1e11 and meter.peak_source.startswith("the achieved rate of this run")
    assert "re-measured" in meter.peak_source
    # re-measured once per run: faster still, the peak follows the achieved rate
    assert meter.rates(2e5)["mfu"] == 1.0 and fresh.calls == 1 and meter.peak == 2e11
    assert meter.rates(1e5)["mfu"] == pytest.approx(0.5)


def test_a_configured_peak_that_training_outruns_is_raised_not_measured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(throughput, "_measure_matmul", FakeMeasurements())  # no measurement left
    meter = ThroughputMeter(1e6, CPU, "fp32", configured_peak=1e9)
    assert meter.rates(1e4)["mfu"] == 1.0
    assert meter.peak == 1e10 and "train.peak_flops" in meter.peak_source
