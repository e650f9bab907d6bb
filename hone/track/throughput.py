"""The device's peak FLOP/s and model FLOPs utilization (MFU).

MFU = achieved model FLOP/s / peak FLOP/s, where the model FLOPs are what the architecture
needs (the model reports them: `flops_per_token()`, e.g. the GPT's 6 per parameter per token
plus attention), not what the kernels happen to run (recomputation from activation
checkpointing does not count). A model that does not report them gets no MFU.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# Dense bf16 tensor-core peaks from NVIDIA's datasheets (the sparsity figures are twice
# these), matched against torch.cuda.get_device_name. More specific patterns come first.
GPU_PEAK_FLOPS: list[tuple[str, float]] = [
    (r"H100.*PCIe", 756e12),
    (r"H100.*NVL", 835e12),
    (r"H100", 989e12),  # SXM5, "NVIDIA H100 80GB HBM3"
    (r"H200", 989e12),
    (r"A100", 312e12),
    (r"\bL4\b", 121e12),
    (r"A10G", 125e12),  # the A10 datasheet figure, which AWS's A10G is quoted with
    (r"RTX 4090", 165e12),  # with fp32 accumulation, as torch uses
]

MEASURE_SECONDS = 0.5  # how long the CPU matmul rate is measured, once per machine
MATMUL_SIZE = 1024


def mfu(tokens_per_second: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilization: the fraction of the peak FLOP/s that training achieves."""
    return tokens_per_second * flops_per_token / peak


def cache_dir() -> Path:
    """$HONE_CACHE_DIR, else ~/.cache/hone (the same root the data sets cache tokens in)."""
    return Path(os.environ.get("HONE_CACHE_DIR") or Path.home() / ".cache" / "hone")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def _measure_matmul(device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    """FLOP/s of square `F.linear` calls on `device`: the best of bursts over about `seconds`.

    `F.linear` because it is what nn.Linear runs: on CPUs without bf16 instructions torch's
    bf16 `linear` (oneDNN) was 18x faster than a bf16 `a @ b` (17 vs 0.95 GFLOP/s here). The
    best burst rather than the mean, so that a moment when other processes held the cores
    does not lower the peak that every later run is measured against.
    """
    n = MATMUL_SIZE
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    F.linear(a, b)  # warm-up: thread pool start, kernel selection
    sync()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        F.linear(a, b)
        sync()
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def _measured(device: torch.device, dtype: torch.dtype, folder: Path) -> tuple[float, str]:
    """The matmul rate of this device, measured once and cached as JSON in `folder`."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    dtype_name = str(dtype).removeprefix("torch.")
    threads, version = torch.get_num_threads(), torch.__version__
    key = f"{name}|threads={threads}|torch={version}|{dtype_name}|linear{MATMUL_SIZE}"
    file = folder / "peak_flops.json"
    try:
        table = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):  # first use, or a file cut short by a crash
        table = {}
    if key in table:
        return float(table[key]), f"measured {dtype_name} matmul rate of {name} (cached)"
    rate = _measure_matmul(device, dtype, MEASURE_SECONDS)
    table[key] = rate
    folder.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table, indent=1))
    tmp.replace(file)  # atomic: readers see the old table or the new one
    return rate, f"measured {dtype_name} matmul rate of {name}"


def peak_flops(
    device: torch.device, configured: float, precision: str = "fp32", folder: Path | None = None
) -> tuple[float, str]:
    """(peak FLOP/s, where the number came from) for MFU.

    `train.peak_flops` when set; else the datasheet table for known GPUs; else a matmul rate
    measured once (in the training precision: bf16 and fp32 differ a lot on CPUs) and cached
    in `folder` (default: the hone cache dir), keyed by device, threads and torch version.
    """
    if configured > 0:
        return configured, "train.peak_flops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for pattern, flops in GPU_PEAK_FLOPS:
            if re.search(pattern, name):
                return flops, f"bf16 datasheet peak of {name}"
    dtype = (
        torch.bfloat16
        if precision == "bf16"
        else torch.float16
        if precision == "fp16"
        else torch.float32
    )
    if device.type == "cuda" and dtype == torch.float32:
        dtype = torch.bfloat16  # an unknown GPU: its tensor-core rate, like the table
    return _measured(device, dtype, folder or cache_dir())


class ThroughputMeter:
    """Tokens per second and MFU of a language model's training, given the model's own
    training FLOPs per token (None: a model that does not report them gets no MFU)."""

    def __init__(
        self,
        flops_per_token: float | None,
        device: torch.device,
        precision: str,
        configured_peak: float = 0.0,
        world_size: int = 1,
    ) -> None:
        self.flops_per_token, self.device, self.precision = flops_per_token, device, precision
        self.configured_peak, self.world_size = configured_peak, world_size
        self.peak: float | None = None

    def rates(self, tokens_per_second: float) -> dict[str, float]:
        """{"tokens_per_second": ..., "mfu": ...}; tokens counted over the global batch."""
        out = {"tokens_per_second": tokens_per_second}
        if self.flops_per_token is None:
            return out
        if self.peak is None:
            # Measuring the peak (first run on a machine) draws random matrices: fork the RNGs
            # so that the run's dropout masks do not depend on whether it was cached.
            cuda = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                self.peak, self.peak_source = peak_flops(
                    self.device, self.configured_peak, self.precision
                )
        # The peak is one device's; the processes share the work.
        out["mfu"] = mfu(tokens_per_second, self.flops_per_token, self.peak * self.world_size)
        return out
