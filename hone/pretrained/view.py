"""A Hugging Face checkpoint seen as a hone run, so that every command that takes a run takes
a checkpoint folder or an `hf:` id too.

`checkpoint_view(path)` writes, once per checkpoint, a run folder in hone's cache
($HONE_CACHE_DIR, else ~/.cache/hone, under `checkpoints/`) holding what `LoadedRun.load`
reads from a run: the config (the checkpoint's architecture as hone's own family, `llama` or
`gpt`; the data set `checkpoint`, which keeps the tokenizer), data.json (a language model of
the checkpoint's vocabulary and context), the tokenizer, and the weights under hone's
names. `hone.engine.inference.run_files` hands that folder to `hone sample`, `eval`, `serve`,
`export` and `compress`, so none of them needs code of its own for checkpoints.

The weights are written once more, in the checkpoint's dtype: a converted copy costs disk
(a 135M bf16 model: 270 MB), but it makes the view a self-contained run that loads like any
other, and what is made from it (an int8 copy, an ONNX graph, a bundle) needs no checkpoint.
The folder's name holds a hash of the checkpoint's files (paths, sizes, modification times),
so a changed checkpoint gets a new view and a stale one is never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from hone.pretrained.source import checkpoint_name, is_checkpoint, resolve_checkpoint
from hone.run_files import RunFiles

__all__ = ["checkpoint_view", "is_checkpoint"]

FORMAT_VERSION = 1  # bump when what a view holds changes


def checkpoint_view(path: str | Path) -> Path:
    """The hone run folder of the checkpoint `path` (a folder or `hf:ORG/NAME[@REVISION]`),
    written on first use."""
    folder = resolve_checkpoint(path).resolve()
    root = _cache_root() / "checkpoints"
    entry = root / f"{checkpoint_name(path)}-{_key(folder)[:16]}"
    if not RunFiles(entry).model.is_file():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=root))
        try:
            _write_view(str(path), folder, RunFiles(staging), RunFiles(entry))
            try:
                staging.rename(entry)
            except OSError:  # another process renamed its identical view first
                pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return entry


def _cache_root() -> Path:
    """hone's cache, as for tokenized corpora (hone.data.text.cache)."""
    return Path(os.environ.get("HONE_CACHE_DIR") or Path.home() / ".cache" / "hone")


def _key(folder: Path) -> str:
    """sha256 of the checkpoint folder's path and of the name, size and modification time of
    each of its files: any change to the checkpoint makes a new key."""
    digest = hashlib.sha256(f"{FORMAT_VERSION}\0{folder}".encode())
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        stat = file.stat()  # follows the Hub cache's links to its blobs
        digest.update(f"\0{file.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _write_view(path: str, folder: Path, files: RunFiles, final: RunFiles) -> None:
    """Write the view of checkpoint `folder` (named `path` by the user) into `files`, whose
    folder will be renamed to `final`'s."""
    import torch

    from hone.config import Config, DataConfig, ModelConfig, to_toml
    from hone.data.text.tokenizers import load_tokenizer
    from hone.pretrained.weights import load_pretrained, write_safetensors

    model, family, arch = load_pretrained(folder)
    tokenizer = load_tokenizer(str(folder))
    tokenizer.save(str(files.tokenizer))
    cfg = Config(
        recipe=checkpoint_name(path),
        description=f"the pretrained checkpoint {path} as a hone run"
        + (f" ({folder})" if str(folder) != path else ""),
        model=ModelConfig(name=family, arch=arch),
        data=DataConfig(name="checkpoint", tokenizer_path=str(final.tokenizer)),
    )
    # Not a run hone trained: no bound of its own, but a config must have one. Evaluations
    # read a whole split (eval_batches = 0), a window a batch at the checkpoint's context.
    cfg.train.max_steps, cfg.train.batch_size, cfg.train.eval_batches = 1, 1, 0
    files.config.write_text(to_toml(cfg))
    info = {"task": "lm", "vocab_size": arch.vocab_size, "context_length": arch.block_size}
    files.data_info.write_text(json.dumps(info, indent=2) + "\n")
    # each tensor once (a tied head is the embedding), written from the mapped checkpoint
    unique: dict[int, tuple[str, torch.Tensor]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        unique.setdefault(id(tensor), (name, tensor.detach()))
    write_safetensors(dict(unique.values()), files.model, metadata={"format": "pt"})
