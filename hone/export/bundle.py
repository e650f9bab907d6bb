"""`hone export --format safetensors`: a run's model as a self-contained bundle.

A bundle is a folder that `LoadedRun.load` reads like a run directory, so `hone predict`,
`hone sample`, `hone eval` (where the config's data is at hand) and `hone serve` take it
in place of the run: the resolved config, the weights (safetensors), data.json (the
preprocessing, feature names and class labels), the converters and the tokenizer when the
run has them, and a manifest with the sha256 of each file, which loading checks. No
checkpoints, no metrics. A user model (model.name = custom) still needs its code importable.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import hone
from hone.engine.inference import LoadedRun
from hone.engine.manifest import FORMAT, VERSION, describe_files
from hone.errors import ConfigError
from hone.run_files import INFERENCE_FILES, MANIFEST, staging_folder


def export_bundle(run: str | Path, output: str | Path | None = None) -> Path:
    """Write the bundle of a run (or of another bundle) to `output` (default RUN/bundle) and
    return its path. An existing bundle there is replaced; any other existing folder refused."""
    loaded = LoadedRun.load(run, "cpu")  # a bad run fails here, before anything is written
    assert loaded.files is not None
    source = loaded.files.root
    target = Path(output) if output is not None else loaded.files.bundle
    if target.exists() and not (target.is_dir() and _replaceable(target)):
        raise ConfigError(
            f"--output {target} exists and is not a hone bundle; pass a new folder for the bundle"
        )
    with staging_folder(target) as staging:
        bundle = staging / target.name  # made by mkdir: the user's umask, not mkdtemp's 0700
        bundle.mkdir()
        for name in INFERENCE_FILES:
            if (source / name).is_dir():
                shutil.copytree(source / name, bundle / name)
            elif (source / name).is_file():
                shutil.copy2(source / name, bundle / name)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "files": describe_files(bundle),
            "recipe": loaded.cfg.recipe,
            "task": loaded.spec.task,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "hone_version": hone.__version__,
        }
        (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(bundle, target)
    return target


def _replaceable(folder: Path) -> bool:
    """An empty folder, or a bundle written before."""
    return (folder / MANIFEST).is_file() or not any(folder.iterdir())
