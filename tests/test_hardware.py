"""Native bf16 detection: CPU flags, CUDA's answer without emulation, and the override."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from hone.errors import ConfigError
from hone.hardware import OVERRIDE_ENV, cpu_flags, cpu_int8_flags, cpu_name, native_bf16

CPU = torch.device("cpu")
LINUX = sys.platform.startswith("linux")


def fake_cpuinfo(tmp_path: Path, flags: str) -> Path:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse {flags}\n")
    return cpuinfo


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OVERRIDE_ENV, raising=False)


@pytest.mark.skipif(not LINUX, reason="reads Linux's /proc/cpuinfo format")
@pytest.mark.parametrize(
    ("flags", "expected"),
    [("avx2 avx512f", False), ("avx2 avx512f avx512_bf16", True), ("avx2 amx_tile amx_bf16", True)],
)
def test_cpu_bf16_follows_the_flags(tmp_path: Path, flags: str, expected: bool) -> None:
    cpuinfo = fake_cpuinfo(tmp_path, flags)
    assert "avx2" in cpu_flags(cpuinfo)
    assert native_bf16(CPU, cpuinfo) is expected


@pytest.mark.skipif(not LINUX, reason="reads Linux's /proc/cpuinfo format")
def test_int8_flags_are_read_in_their_listed_order(tmp_path: Path) -> None:
    assert cpu_int8_flags(fake_cpuinfo(tmp_path, "amx_int8 avx2 avx512_vnni")) == [
        "avx512_vnni",
        "amx_int8",
    ]
    assert cpu_int8_flags(tmp_path / "missing") == []


def test_no_cpuinfo_means_no_native_bf16(tmp_path: Path) -> None:
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert not native_bf16(CPU, tmp_path / "missing")  # the safe side: fp32


def test_the_override_beats_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_bf16, without = fake_cpuinfo(tmp_path, "avx512_bf16"), tmp_path / "missing"
    monkeypatch.setenv(OVERRIDE_ENV, "0")
    assert not native_bf16(CPU, with_bf16)
    monkeypatch.setenv(OVERRIDE_ENV, "1")
    assert native_bf16(CPU, without)
    assert native_bf16(torch.device("meta"))
    monkeypatch.setenv(OVERRIDE_ENV, "yes")
    with pytest.raises(ConfigError, match=f"{OVERRIDE_ENV} must be 0 or 1, got 'yes'"):
        native_bf16(CPU)


def test_cuda_counts_only_hardware_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    # A pre-Ampere GPU: torch says bf16 "works" only when emulation counts.
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
    )
    assert not native_bf16(torch.device("cuda"))
    assert not native_bf16(torch.device("meta"))  # other devices: no


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/cpuinfo")
def test_cpu_name_is_the_first_model_name(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\n\nmodel name\t: other\n")
    assert cpu_name(info) == "AMD EPYC 9R14"
    assert cpu_name(tmp_path / "missing")  # falls back to the platform's answer
