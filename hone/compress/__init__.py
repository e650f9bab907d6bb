"""Compression of trained runs: each method writes a new run directory and a comparison table.

`compress(run, method)` (hone.compress.compressor) does what every method shares: it
measures the original and the compressed model the same way, writes compress.json, and
keeps the new run only when its validation metric passes the gate. A method
(`CompressionMethod`, hone.compress.base) only checks the source and writes its model.
"""

from __future__ import annotations

from hone.compress.base import Compressed, CompressionMethod
from hone.compress.compressor import DEFAULT_MAX_DROP, DEFAULT_REPEATS, compress
from hone.compress.distill import Distill
from hone.compress.measure import measure
from hone.compress.prune import Prune
from hone.compress.quantize import QuantizeInt8, cpu_int8_flags, pick_backend

__all__ = [
    "DEFAULT_MAX_DROP",
    "DEFAULT_REPEATS",
    "Compressed",
    "CompressionMethod",
    "Distill",
    "Prune",
    "QuantizeInt8",
    "compress",
    "cpu_int8_flags",
    "measure",
    "pick_backend",
]
