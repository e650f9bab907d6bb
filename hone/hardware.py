"""What the machine computes fast: the facts that precision choices are made from.

`native_bf16(device)` answers whether `device` multiplies bf16 matrices in hardware. Where it
does not, bf16 matmuls are emulated and far slower than fp32 ones: on an AVX2-only CPU, five
Newton–Schulz iterations over 12 matrices of 512x128 took 810 ms in bf16 against 30 ms in fp32
(issue 18). Muon's `optim.muon_precision = 'auto'` asks it; so can `train.precision = 'auto'`.

Set HONE_NATIVE_BF16=1 or =0 to override the answer for every device (tests, or a benchmark
that emulates a CPU without bf16 by capping MKL and oneDNN at AVX2: bench/muon_step.py).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

from hone.errors import ConfigError

OVERRIDE_ENV = "HONE_NATIVE_BF16"
# x86 instructions that multiply bf16 in hardware: AVX512-BF16's dot products and AMX's bf16
# tiles. torch's own probe, torch.ops.mkldnn._is_mkldnn_bf16_supported(), is no answer: oneDNN
# also "supports" bf16 on plain AVX512 by converting to fp32, and torch 2.13 exposes no
# cpuinfo query for these two flags (torch._C._cpu has only _init_amx), hence /proc/cpuinfo.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# x86 instructions that multiply-add int8 in one step, without 16-bit intermediate sums: what
# `hone compress --quantize int8` picks ONNX Runtime's weight range from.
INT8_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of the first CPU in Linux's /proc/cpuinfo; none elsewhere."""
    if not sys.platform.startswith("linux") or not cpuinfo.is_file():
        return frozenset()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_int8_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The INT8_CPU_FLAGS this CPU has (Linux's /proc/cpuinfo); none assumed elsewhere."""
    flags = cpu_flags(cpuinfo)
    return [flag for flag in INT8_CPU_FLAGS if flag in flags]


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform module says."""
    if sys.platform.startswith("linux") and cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def native_bf16(device: torch.device, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether `device` does bf16 matmuls in hardware (else fp32 is the fast precision).

    CUDA: compute capability 8.0 (Ampere) or later; older GPUs emulate bf16. CPU: AVX512-BF16
    or AMX (x86 Linux); other CPUs are assumed to emulate it, the safe side: Muon's step for
    the char GPT took 1.2x as long in fp32 as in native bf16, and 42x as long in emulated bf16
    as in fp32 (BENCHMARKS.md, issue 18). Other devices: no. HONE_NATIVE_BF16=1/0 overrides.
    """
    override = os.environ.get(OVERRIDE_ENV)
    if override is not None:
        if override not in ("0", "1"):
            raise ConfigError(
                f"{OVERRIDE_ENV} must be 0 or 1, got {override!r}; unset it to detect"
            )
        return override == "1"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return not cpu_flags(cpuinfo).isdisjoint(BF16_CPU_FLAGS)
    return False
