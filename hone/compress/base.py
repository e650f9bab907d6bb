"""What every compression method implements: check a source run, write the compressed model.

A method is handed the source `LoadedRun` and the new run directory, which already holds a
copy of everything the source needs to load (config, data info, tokenizer, converters, fp32
weights). It writes the compressed model there, in any form `LoadedRun.load` reads: new
weights and converter records (`hone.compress.run.save_model`, or the Trainer's own when it
fine-tunes), an int8 model and its converter record beside the fp32 weights, a new config
for a student. The framework (`hone.compress.compress`) then loads both runs the same way,
measures them, writes the table and applies the gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hone.engine.backends import OnnxModule
from hone.engine.inference import LoadedRun
from hone.engine.int8 import int8_linears
from hone.errors import ConfigError
from hone.run_files import RunFiles


@dataclass
class Compressed:
    """What a method wrote: the file a deployment would ship (its bytes are reported), a
    one-line account of the choices made (printed), and the details for compress.json."""

    artifact: Path
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


class CompressionMethod:
    """One way to make a trained model smaller or faster."""

    name = ""  # in compress.json's "method"
    suffix = ""  # of the default output directory: RUN-<suffix>

    def check(self, source: LoadedRun) -> None:
        """Raise a ConfigError when this method cannot compress `source`; runs before
        anything is written."""

    def apply(self, source: LoadedRun, out: RunFiles) -> Compressed:
        """Write the compressed model of `source` into the new run directory `out`."""
        raise NotImplementedError


def refuse_int8(source: LoadedRun) -> None:
    """A ConfigError for a run that `--quantize int8` made: compress the one it came from."""
    if isinstance(source.model, OnnxModule) or int8_linears(source.model):
        raise ConfigError(
            f"{source.files.root if source.files else 'this run'} is already int8; "
            "compress the run it was made from"
        )
