"""A bundle's manifest: the sha256 and size of each file, written on export, checked on load.

A bundle (`hone export --format safetensors`) is a folder that `LoadedRun.load` reads like a
run directory. Its manifest lets the loader refuse a file that changed since the export (a
partial copy, an edited config, other weights) instead of serving it silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hone.checkpoint.format import sha256_file
from hone.errors import ConfigError
from hone.run_files import MANIFEST

FORMAT = "hone-bundle"
VERSION = 1


def describe_files(root: Path) -> dict[str, dict[str, Any]]:
    """{relative posix path: {"sha256", "bytes"}} of every file under `root` but the manifest."""
    return {
        path.relative_to(root).as_posix(): {
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
        }
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() != MANIFEST
    }


def verify_manifest(root: Path) -> None:
    """Check every file a bundle's manifest lists; a ConfigError names the first that differs."""
    manifest = json.loads((root / MANIFEST).read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ConfigError(
            f"{root / MANIFEST} is not a version-{VERSION} {FORMAT} manifest; re-export the bundle "
            "with this hone"
        )
    for name, expected in manifest["files"].items():
        path = root / name
        if not path.is_file():
            raise ConfigError(f"bundle file {path} is missing; re-export the bundle")
        if path.stat().st_size != expected["bytes"] or sha256_file(path) != expected["sha256"]:
            raise ConfigError(
                f"bundle file {path} does not match its manifest sha256; re-export the bundle"
            )
