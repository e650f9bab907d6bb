"""The base checkpoint a LoRA run leans on: a reference its saved weights carry instead of
the frozen weights themselves.

A LoRA run on a pretrained checkpoint (`[model] name = "pretrained"`) trains its adapters
only; the base's weights never move, and the run's config names where they come from. So
its checkpoints and its model.safetensors hold the adapters alone (hone.checkpoint.io's
`save_weights`), with this reference in the file's metadata: the checkpoint's path (a
folder, or hf:ORG/NAME@REVISION) and the size and sha256 of each of its files. Loading
rebuilds the base from the config, checks it against the reference (a base changed since
the run trained is refused in one line, hone.checkpoint.io: the adapters fit the weights
they were trained on), and loads the adapters on top.

Hashing reads every byte of the base once per load (about a second per GB); a file in the
Hugging Face cache is a link to a blob named by its sha256, read from the name instead.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _sha256(path: Path) -> str:
    """The file's sha256; a Hub-cache link to a blob names it already."""
    if path.is_symlink():
        blob = path.resolve().name
        if _SHA256.fullmatch(blob):
            return blob
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def base_reference(path: str) -> dict[str, Any]:
    """{"path": path, "files": {name: {"bytes", "sha256"}}} of the checkpoint `path`
    (model.path): its config.json and weights files."""
    from hone.pretrained.source import CONFIG_FILE, resolve_checkpoint
    from hone.pretrained.weights import checkpoint_files

    folder = resolve_checkpoint(path)
    files = [folder / CONFIG_FILE, *checkpoint_files(folder)]
    described = {f.name: {"bytes": f.stat().st_size, "sha256": _sha256(f)} for f in sorted(files)}
    return {"path": str(path), "files": described}
