"""The new run directory of a compression: staged beside its final place, renamed at the end.

The stage starts as a copy of what `LoadedRun.load` reads from the source (config, data
info, tokenizer, converter records, fp32 weights; no checkpoints, logs or metrics), the
method writes its model into it, and only a compression that passes its gate is renamed to
the output path: a failure or a crash leaves nothing that looks like a finished run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from hone.errors import ConfigError
from hone.run_files import INFERENCE_FILES, RunFiles, staging_folder


def default_output(run: str | Path, suffix: str) -> Path:
    """RUN-<suffix>, beside RUN; for a Hub checkpoint (hf:ORG/NAME), NAME-<suffix> here."""
    from hone.pretrained.source import checkpoint_name, is_hub_id

    if is_hub_id(run):
        return Path.cwd() / f"{checkpoint_name(run)}-{suffix}"
    run = Path(run).resolve()
    return run.parent / f"{run.name}-{suffix}"


def check_output(output: Path) -> None:
    if output.exists():
        raise ConfigError(f"--output {output} already exists; remove it or pass another --output")


@contextmanager
def staged_run(source: RunFiles, output: Path) -> Iterator[RunFiles]:
    """A hidden run directory beside `output` holding the source's inference files; removed
    on leaving unless `publish` moved it into place."""
    with staging_folder(output) as folder:
        stage = RunFiles(folder)
        for name in INFERENCE_FILES:
            path = source.root / name
            if path.is_dir():
                shutil.copytree(path, stage.root / name)
            elif path.is_file():
                shutil.copy2(path, stage.root / name)
        yield stage


def publish(stage: RunFiles, output: Path) -> None:
    """Move a finished stage to `output` in one rename (same folder, same file system)."""
    os.rename(stage.root, output)


def save_model(model: nn.Module, converters: Iterable[dict[str, Any]], out: RunFiles) -> None:
    """Write a compressed nn.Module as a run's weights (safetensors) with every converter
    record that rebuilds its architecture before they load: the source's, then the method's."""
    from safetensors.torch import save_model as save_safetensors

    records = list(converters)
    if records:
        out.converters.write_text(json.dumps({"converters": records}, indent=2) + "\n")
    save_safetensors(model, str(out.model))
