"""The device's peak FLOP/s and model FLOPs utilization (MFU).

MFU = achieved model FLOP/s / peak FLOP/s, where the model FLOPs are what the architecture
needs (the model reports them: `flops_per_token()`, e.g. the GPT's 6 per trained parameter
per token, 4 per frozen one, plus attention), not what the kernels happen to run
(recomputation from activation checkpointing does not count). A model that does not report
them gets no MFU.

The peak comes from `train.peak_flops`, else a GPU datasheet, else a matmul rate measured on
this machine and cached in the hone cache dir. Two guards keep a measured peak honest:

- A measurement taken while other processes held our cores is low (a 2-thread CPU peak of
  44 GFLOP/s cached under load once made a run log MFU 209%). While measuring, the process's
  CPU time is compared with wall time x threads; below `MIN_CPU_SHARE` the cores were not
  ours: it is tried again, and if every try was spoiled the rate serves this run only, is not
  cached, and its source says so.
- Training that achieves more FLOP/s than the peak proves the peak wrong: the meter measures
  it again, bypassing the cache, once per run (a clean new rate replaces the cached one), and
  if training is still faster, the achieved rate becomes the peak. MFU never exceeds 1.

The peak a run ended with and its source are recorded in the run's summary.json ("peak_flops",
"peak_source": `ThroughputMeter.summary()`), not in metrics.jsonl, whose events a resumed run
must repeat exactly.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from hone.hardware import cpu_name

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
# The least share of its threads' wall time that the process must get as CPU time for a
# measurement to count as the machine's. torch's OpenMP threads spin between matmuls, so a
# process that has its cores gets nearly all of it; with other benchmarks on the same 2 cores
# (and this process at nice 19) it got 0.33-0.49.
MIN_CPU_SHARE = 0.85
MEASURE_TRIES = 2  # measurements spoiled by load before the rate is used uncached


def mfu(tokens_per_second: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilization: the fraction of the peak FLOP/s that training achieves."""
    return tokens_per_second * flops_per_token / peak


def cache_dir() -> Path:
    """$HONE_CACHE_DIR, else ~/.cache/hone (the same root the data sets cache tokens in)."""
    return Path(os.environ.get("HONE_CACHE_DIR") or Path.home() / ".cache" / "hone")


@dataclass(frozen=True)
class Measurement:
    """A matmul rate and how much of the measuring time the cores were ours."""

    flops: float  # FLOP/s of the best burst
    cpu_share: float  # CPU seconds / (wall seconds x threads) over the bursts; 1.0 on CUDA

    @property
    def spoiled(self) -> bool:
        """Whether other processes took enough of the cores to make the rate too low."""
        return self.cpu_share < MIN_CPU_SHARE


def _usable_threads() -> int:
    """torch's intra-op threads, at most the cores this process may run on."""
    threads = torch.get_num_threads()
    if hasattr(os, "sched_getaffinity"):  # Linux
        threads = min(threads, len(os.sched_getaffinity(0)))
    return threads


def _measure_matmul(
    device: torch.device,
    dtype: torch.dtype,
    seconds: float,
    cpu_clock: Callable[[], float] = time.process_time,
) -> Measurement:
    """FLOP/s of square `F.linear` calls on `device`: the best of bursts over about `seconds`,
    with the share of CPU time the process got meanwhile (`cpu_clock`: its CPU seconds).

    `F.linear` because it is what nn.Linear runs: on CPUs without bf16 instructions torch's
    bf16 `linear` (oneDNN) was 18x faster than a bf16 `a @ b` (17 vs 0.95 GFLOP/s here). The
    best burst rather than the mean, so that a moment when other processes held the cores
    does not lower the peak; the CPU share catches load that lasted through every burst.
    """
    n = MATMUL_SIZE
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    F.linear(a, b)  # warm-up: thread pool start, kernel selection
    sync()
    best, cpu_start, wall_start = 0.0, cpu_clock(), time.perf_counter()
    while time.perf_counter() < wall_start + seconds:
        start = time.perf_counter()
        F.linear(a, b)
        sync()
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    if device.type == "cuda":  # the host thread only waits; the GPU's load is not visible here
        return Measurement(best, 1.0)
    wall, cpu = time.perf_counter() - wall_start, cpu_clock() - cpu_start
    return Measurement(best, cpu / (wall * _usable_threads()))


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def cache_key(device: torch.device, dtype: torch.dtype) -> str:
    """The entry of peak_flops.json that holds this device's matmul rate in `dtype`: a rate
    holds for one device, thread count, torch version and dtype."""
    dtype_name = str(dtype).removeprefix("torch.")
    threads, version = torch.get_num_threads(), torch.__version__
    return (
        f"{_device_name(device)}|threads={threads}|torch={version}|{dtype_name}|linear{MATMUL_SIZE}"
    )


def _measured(
    device: torch.device, dtype: torch.dtype, folder: Path, cached: bool = True
) -> tuple[float, str]:
    """The matmul rate of this device, measured once and cached as JSON in `folder`; with
    `cached=False` measured again whatever the cache holds. A rate measured under load (all
    `MEASURE_TRIES` spoiled) is returned but not cached."""
    name, dtype_name = _device_name(device), str(dtype).removeprefix("torch.")
    key, file = cache_key(device, dtype), folder / "peak_flops.json"
    try:
        table = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):  # first use, or a file cut short by a crash
        table = {}
    source = f"measured {dtype_name} matmul rate of {name}"
    if cached and key in table:
        return float(table[key]), f"{source} (cached)"
    tries = [_measure_matmul(device, dtype, MEASURE_SECONDS)]
    while tries[-1].spoiled and len(tries) < MEASURE_TRIES:
        tries.append(_measure_matmul(device, dtype, MEASURE_SECONDS))
    measurement = tries[-1]
    if measurement.spoiled:  # every try: the best is still a lower bound of the peak
        best = max(tries, key=lambda m: m.flops)
        return best.flops, (
            f"{source} while other processes held the cores ({best.cpu_share:.0%} of "
            f"{_usable_threads()} threads' time was ours): this run only, not cached"
        )
    table[key] = measurement.flops
    folder.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table, indent=1))
    tmp.replace(file)  # atomic: readers see the old table or the new one
    return measurement.flops, source


def datasheet_peak(device: torch.device) -> tuple[float, str] | None:
    """(dense bf16 peak FLOP/s, source) of a GPU in the datasheet table; None for others."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for pattern, flops in GPU_PEAK_FLOPS:
        if re.search(pattern, name):
            return flops, f"bf16 datasheet peak of {name}"
    return None


def peak_flops(
    device: torch.device,
    configured: float,
    precision: str = "fp32",
    folder: Path | None = None,
    cached: bool = True,
) -> tuple[float, str]:
    """(peak FLOP/s, where the number came from) for MFU.

    `train.peak_flops` when set; else the datasheet table for known GPUs; else a matmul rate
    measured once (in the training precision: bf16 and fp32 differ a lot on CPUs) and cached
    in `folder` (default: the hone cache dir), keyed by device, threads and torch version;
    `cached=False` measures it again.
    """
    if configured > 0:
        return configured, "train.peak_flops"
    if (datasheet := datasheet_peak(device)) is not None:
        return datasheet
    dtype = (
        torch.bfloat16
        if precision == "bf16"
        else torch.float16
        if precision == "fp16"
        else torch.float32
    )
    if device.type == "cuda" and dtype == torch.float32:
        dtype = torch.bfloat16  # an unknown GPU: its tensor-core rate, like the table
    return _measured(device, dtype, folder or cache_dir(), cached)


class ThroughputMeter:
    """Tokens per second and MFU of a language model's training, given the model's own
    training FLOPs per token (None: a model that does not report them gets no MFU).

    The peak is looked up at the first `rates` call; one that training outruns is measured
    again (once) or raised to the achieved rate, so MFU is at most 1.
    """

    def __init__(
        self,
        flops_per_token: float | None,
        device: torch.device,
        precision: str,
        configured_peak: float = 0.0,
        world_size: int = 1,
        folder: Path | None = None,
    ) -> None:
        assert precision != "auto", "resolve it first: hone.engine.precision.resolve_precision"
        self.flops_per_token, self.device, self.precision = flops_per_token, device, precision
        self.configured_peak, self.world_size, self.folder = configured_peak, world_size, folder
        self.peak: float | None = None
        self.peak_source = ""
        self.remeasured = False
        self._outrun_peak: tuple[float, str] | None = None

    @classmethod
    def for_model(
        cls,
        model: torch.nn.Module,
        device: torch.device,
        precision: str,
        configured_peak: float = 0.0,
        world_size: int = 1,
        context: int = 0,
    ) -> ThroughputMeter:
        """The meter of `model`'s training, with the FLOPs per token the model reports (its
        `flops_per_token()`, at the `context` trained when it takes one; none: no MFU).
        `precision` is the resolved one, not 'auto'."""
        report = getattr(model, "flops_per_token", None)
        flops_per_token = None
        if report is not None:
            takes_context = context and "context" in inspect.signature(report).parameters
            flops_per_token = report(context=context) if takes_context else report()
        return cls(flops_per_token, device, precision, configured_peak, world_size)

    def rates(self, tokens_per_second: float) -> dict[str, float]:
        """{"tokens_per_second": ..., "mfu": ...}; tokens counted over the global batch."""
        out = {"tokens_per_second": tokens_per_second}
        if self.flops_per_token is None:
            return out
        if self.peak is None:
            self.peak, self.peak_source = self._look_up(cached=True)
        # The peak is one device's; the processes share the work.
        achieved = tokens_per_second * self.flops_per_token / self.world_size
        if achieved > self.peak:
            self._outrun(achieved)
        out["mfu"] = mfu(tokens_per_second, self.flops_per_token, self.peak * self.world_size)
        return out

    def _look_up(self, cached: bool) -> tuple[float, str]:
        # Measuring the peak (first run on a machine) draws random matrices: fork the RNGs so
        # that the run's dropout masks do not depend on whether it was cached.
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            return peak_flops(
                self.device, self.configured_peak, self.precision, self.folder, cached
            )

    def _outrun(self, achieved: float) -> None:
        """Training achieved more FLOP/s than the peak: the peak is wrong. A measured one is
        measured again (once per run, bypassing the cache); if training is still faster, or
        the peak was configured or from a datasheet, the achieved rate becomes the peak."""
        assert self.peak is not None
        measured = self.configured_peak <= 0 and datasheet_peak(self.device) is None
        if measured and not self.remeasured:
            self.remeasured = True
            below, below_source = self.peak, self.peak_source
            self.peak, source = self._look_up(cached=False)
            self.peak_source = (
                f"{source}, re-measured because training achieved {achieved:.3g} FLOP/s, above "
                f"the {below:.3g} of the {below_source}"
            )
            if achieved <= self.peak:
                return
        if self._outrun_peak is None:  # the peak that training first outran, kept for the source
            self._outrun_peak = self.peak, self.peak_source
        beaten, beaten_source = self._outrun_peak
        self.peak = achieved
        self.peak_source = (
            f"the achieved rate of this run, above the {beaten:.3g} FLOP/s of the {beaten_source}"
        )

    def summary(self) -> dict[str, float | str]:
        """The peak MFU was measured against and its source, for the run's summary.json."""
        if self.peak is None:
            return {}
        return {"peak_flops": self.peak, "peak_source": self.peak_source}
