"""One checkpoint on disk: a directory of safetensors and JSON files sealed by a manifest.

    checkpoints/step-0000120/
        model.safetensors        weights (safetensors.torch.save_model: tied weights once)
        optimizer.safetensors    optimizer state tensors   } written by a `StateIO`,
        optimizer.json           the rest of it            } see io.py
        trainer.safetensors      tensors of the loop state (loss window, RNG states)
        trainer.json             schedule, early stopping, counters, batcher, RNG, ...
        manifest.json            step, sha256 and size of every file above; written last

Atomicity: everything is written into `checkpoints/.tmp-step-0000120/`, each file fsynced,
then the directory fsynced and renamed into place (and the parent fsynced), so a reader sees
either no checkpoint or a complete one. A directory is loaded only after `verify` has checked
that the manifest lists exactly the files present, with matching sizes and hashes.

Safety: nothing is ever unpickled. A file that is not in the manifest, or that looks like a
pickle (torch.save's zip or a raw pickle stream) or has a pickle-ish suffix, makes the
checkpoint *unsafe*: loading stops with an error instead of silently skipping it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from hone.errors import UserError

FORMAT, VERSION = "hone-checkpoint", 1
MANIFEST = "manifest.json"
STEP_PREFIX, TMP_PREFIX = "step-", ".tmp-"
# Suffixes of files that torch.save / pickle produce; hone never writes any of them.
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".joblib"}
# Test-only: "POINT@STEP" SIGKILLs this process at POINT of the save of checkpoint STEP.
CRASH_ENV = "HONE_CHECKPOINT_CRASH"
CRASH_POINTS = ("between_files", "before_rename", "after_rename")


class CorruptCheckpoint(Exception):
    """A checkpoint that is incomplete or damaged (missing or mismatched manifest entries)."""


class UnsafeCheckpoint(UserError):
    """A checkpoint or run directory holding a file hone did not write (a pickle, say)."""


def step_dir_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:07d}"


def parse_step(name: str) -> int | None:
    """The step of a 'step-0000120' directory name, or None for any other name."""
    digits = name[len(STEP_PREFIX) :]
    if name.startswith(STEP_PREFIX) and len(digits) == 7 and digits.isdigit():
        return int(digits)
    return None


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's entry to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    # allow_nan=False: `state.flatten` already tagged NaN/inf, so the JSON stays standard.
    path.write_text(json.dumps(data, allow_nan=False, separators=(",", ":")) + "\n")


def looks_like_pickle(path: Path) -> bool:
    """A suffix that pickle writers use, or the first bytes of a pickle or of torch.save's zip."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:  # removed meanwhile by another rank's cleanup: nothing to load
        return False
    # Pickle protocols 2-5 open with PROTO (0x80) and the protocol number; torch.save writes a
    # zip archive (PK\x03\x04) holding a pickle.
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head == b"PK\x03\x04"


def _files_under(folder: Path) -> list[str]:
    # os.walk skips folders that vanish while it walks: under several processes, rank 0 may be
    # removing a partial checkpoint while another rank looks.
    return sorted(
        str((Path(root) / name).relative_to(folder))
        for root, _, names in os.walk(folder)
        for name in names
    )


def refuse_pickles(folder: Path, what: str) -> None:
    """Raise `UnsafeCheckpoint` if any file under `folder` looks like a pickle."""
    for name in _files_under(folder):
        if looks_like_pickle(folder / name):
            raise UnsafeCheckpoint(
                f"{what} {folder} holds {name}, which looks like a pickle; hone never loads "
                "pickles because they can run code. Remove the file if you trust its origin, "
                "or start a new run"
            )


def maybe_crash(point: str, step: int) -> None:
    """Test hook: SIGKILL this process at `point` of the save of `step` (see CRASH_ENV)."""
    spec = os.environ.get(CRASH_ENV)
    if spec and spec == f"{point}@{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def seal(tmp: Path, final: Path, step: int, extra: dict[str, Any]) -> Path:
    """Hash every file in `tmp`, write the manifest, fsync, and rename `tmp` to `final`.

    `extra` goes into the manifest (e.g. the monitored metric, for keeping the best). When
    `final` already exists (a checkpoint of the same step, rewritten at the end of a run or
    over a corrupt one) it is moved aside first and removed after the rename.
    """
    files = {}
    for name in _files_under(tmp):
        path = tmp / name
        fsync_path(path)
        files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {"format": FORMAT, "version": VERSION, "step": step, **extra, "files": files}
    write_json(tmp / MANIFEST, manifest)
    fsync_path(tmp / MANIFEST)
    for sub in {p.parent for p in tmp.rglob("*")}:
        fsync_path(sub)
    maybe_crash("before_rename", step)
    old = None
    if final.exists():
        old = final.with_name(f"{TMP_PREFIX}old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_path(final.parent)
    maybe_crash("after_rename", step)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify(folder: Path) -> dict[str, Any]:
    """The manifest of a complete, intact checkpoint; raises otherwise.

    `UnsafeCheckpoint` (a user error) for a file hone did not write; `CorruptCheckpoint` for a
    missing or unreadable manifest, a missing file, or a size or sha256 that does not match.
    """
    present = set(_files_under(folder))
    refuse_pickles(folder, "checkpoint")
    manifest_path = folder / MANIFEST
    if MANIFEST not in present:
        raise CorruptCheckpoint(f"{folder} has no {MANIFEST} (an interrupted save)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        assert manifest["format"] == FORMAT and isinstance(files, dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise CorruptCheckpoint(f"{folder}/{MANIFEST} is unreadable") from None
    if manifest["version"] > VERSION:
        raise UserError(
            f"checkpoint {folder} has format version {manifest['version']}, newer than this "
            f"hone's {VERSION}; upgrade hone to resume it"
        )
    unknown = sorted(present - set(files) - {MANIFEST})
    if unknown:
        raise UnsafeCheckpoint(
            f"checkpoint {folder} holds {', '.join(unknown)}, not in its manifest; hone loads "
            "only files it wrote. Remove them, or start a new run"
        )
    for name, entry in files.items():
        path = folder / name
        if name not in present:
            raise CorruptCheckpoint(f"{folder} lacks {name}")
        if path.stat().st_size != entry["bytes"]:
            raise CorruptCheckpoint(
                f"{path} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}"
            )
        if sha256_file(path) != entry["sha256"]:
            raise CorruptCheckpoint(f"{path} does not match its sha256 in the manifest")
    return manifest
