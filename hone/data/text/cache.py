"""Tokenize once: token streams cached on disk, keyed by everything that determines them.

An entry is a folder `<cache root>/tokens/<key>/` holding `tokens.bin` (the raw token array),
`meta.json` (dtype, length, where validation starts) and the `tokenizer.json` that produced
it. The key is a sha256 of the input text, the tokenizer kind and settings, the split and
`FORMAT_VERSION`, so any change makes a new entry and a stale one is never read. Entries are
written in a temporary folder and renamed into place, so a crash or a concurrent writer never
leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hone.config import DataConfig

FORMAT_VERSION = 1  # bump when the layout of an entry or the tokenization code changes


def cache_root(cfg: DataConfig) -> Path:
    """`data.cache_dir`, else $HONE_CACHE_DIR, else ~/.cache/hone."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    return Path(os.environ.get("HONE_CACHE_DIR") or Path.home() / ".cache" / "hone")


def cache_key(text: bytes, settings: dict[str, Any]) -> str:
    """sha256 of the text and the JSON of the settings that turn it into tokens."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": FORMAT_VERSION, **settings}, sort_keys=True).encode())
    digest.update(b"\0")
    digest.update(text)
    return digest.hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def cached_tokens(
    root: Path, key: str, build: Callable[[Path], tuple[np.ndarray, dict[str, Any]]]
) -> tuple[np.memmap, dict[str, Any], Path]:
    """The cached (tokens memmap, meta, entry folder) of `key`, building the entry on a miss.

    `build(folder)` returns the token array and its metadata and may write files (the
    tokenizer) into `folder`; it runs only when the entry does not exist yet.
    """
    entry = root / "tokens" / key
    if not (entry / "meta.json").is_file():
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=entry.parent))
        try:
            tokens, meta = build(tmp)
            meta = {**meta, "dtype": tokens.dtype.name, "num_tokens": int(len(tokens))}
            tokens.tofile(tmp / "tokens.bin")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            try:
                tmp.rename(entry)
            except OSError:  # another process renamed its identical entry first
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads((entry / "meta.json").read_text())
    tokens = np.memmap(
        entry / "tokens.bin", dtype=meta["dtype"], mode="r", shape=(meta["num_tokens"],)
    )
    return tokens, meta, entry
