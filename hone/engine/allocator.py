"""glibc's malloc told to keep the memory a training step frees, while a run trains.

torch's CPU tensors come from malloc. glibc gives a block past its mmap threshold (32 MiB at
most, moved by what was freed last) its own mapping and unmaps it when freed, and returns
the top of its heap to the kernel past a trim threshold: a training step that frees and
remakes the same activations every step gets fresh pages from the kernel for them, each
page faulted in and zeroed again. Counted on a 2-core AMD EPYC (SmolLM2-135M's shape,
forward and backward at 4 x 256 in fp32): 55-135 thousand page faults and 0.3-0.5 s of
kernel time a step; with the thresholds raised, 0-16 thousand (most steps none), at the
same peak RSS; the steps 2.4% faster (BENCHMARKS.md). A training process's memory is at its
peak every step anyway, so keeping what it frees costs nothing the next step would not take
again.

The setting is the process's, as torch's thread count is (hone.engine.threads): the trainer
holds it only while it trains (`with freed_memory_kept():` around each round) and then sets
glibc's ceilings back and gives the freed memory to the kernel (malloc_trim), so that a
notebook or a program that trains between other work gets its memory back. glibc only (other
C libraries have no mallopt): elsewhere, nothing.

What can only be set when the process starts (glibc's tunables: no per-thread cache and no
fast bins, so that the holes freed tensors leave fit the next ones) is hone.glibc_malloc's,
which `hone train` starts under.

Written here because neither torch nor glibc has it: torch's CPU allocator has no cache
(its caching allocator is CUDA's), and the environment variables (MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_) are read once at the process's start, before hone could set them.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Iterator
from typing import Any

from hone.glibc_malloc import is_glibc

# mallopt's parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# While training: no block of a tensor under 1 GiB gets its own mapping, and the heap's top
# is never given back
HELD_MMAP_THRESHOLD = 1 << 30
HELD_TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int
# Afterwards: where glibc's own sliding thresholds end up (DEFAULT_MMAP_THRESHOLD_MAX on
# 64 bits, and twice it to trim), since once set they no longer slide
AFTER_MMAP_THRESHOLD = 32 << 20
AFTER_TRIM_THRESHOLD = 64 << 20


@functools.cache
def glibc() -> Any:
    """The C library's handle where it is glibc, else None."""
    return ctypes.CDLL(None) if is_glibc() else None


_depth = 0  # rounds inside one another (a trial inside a study): the outermost sets and restores


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[None]:
    """Inside, what the process frees stays in it (glibc); afterwards it goes back."""
    global _depth
    libc = glibc()
    if libc is not None and _depth == 0:
        libc.mallopt(M_MMAP_THRESHOLD, HELD_MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, HELD_TRIM_THRESHOLD)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if libc is not None and _depth == 0:
            libc.mallopt(M_MMAP_THRESHOLD, AFTER_MMAP_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, AFTER_TRIM_THRESHOLD)
            libc.malloc_trim(0)
