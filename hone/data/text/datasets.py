"""Language-modelling data sets: `shakespeare`, `text` (your files) and `tokens` (ids on disk).

Text is split contiguously before tokenizing: the first (1 - data.val_fraction) of it trains
(cut at the next line start), the rest validates; `data.test_fraction` does not apply to
language models. The tokenizer is trained on the training part only, and the token stream is
cached (see `cache.py`), so the second run of a recipe starts at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hone.config import Config, opt, register_data_config
from hone.data.base import DATASETS, TokenData
from hone.data.text.cache import cache_key, cache_root, cached_tokens, token_dtype
from hone.data.text.corpus import EDITIONS, shakespeare_text
from hone.data.text.tokenizers import IdTokenizer, build_tokenizer, load_tokenizer
from hone.errors import ConfigError


@register_data_config("shakespeare")
@dataclass
class CorpusConfig:
    """The keys of a text corpus that hone tokenizes (build_tokenizer) and caches."""

    tokenizer: str = opt(
        "char",
        "tokenizer; pretrained: a checkpoint's, at tokenizer_path",
        choices=["char", "byte", "bpe", "pretrained"],
    )
    tokenizer_path: str = opt("", "a tokenizer.json to load instead of training one")
    bpe_vocab_size: int = opt(1024, "vocabulary size when training a BPE tokenizer", ge=257)
    cache_dir: str = opt("", "where tokenized corpora are cached (default ~/.cache/hone)")


@register_data_config("text")
@dataclass
class TextConfig(CorpusConfig):
    path: str = opt("", "a UTF-8 text file, or a folder of .txt files")


@register_data_config("tokens")
@dataclass
class TokensConfig:
    path: str = opt("", "a binary file of token ids, read through numpy memmap")
    token_dtype: str = opt("uint16", "dtype of the ids", choices=["uint16", "uint32"])
    tokenizer_path: str = opt("", "a tokenizer.json that decodes the ids (else samples are ids)")


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """(train, val): the first (1 - val_fraction) of the text, extended to a line start."""
    cut = int(len(text) * (1 - val_fraction))
    newline = text.find("\n", cut)
    if val_fraction > 0 and newline != -1:
        cut = newline + 1
    return text[:cut], text[cut:]


def tokenizer_settings(cfg: Config) -> dict[str, Any]:
    """Everything besides the text that decides the token stream (part of the cache key)."""
    settings: dict[str, Any] = {
        "tokenizer": cfg.data.tokenizer,
        "val_fraction": cfg.data.val_fraction,
    }
    if cfg.data.tokenizer_path:
        file = Path(cfg.data.tokenizer_path)
        file = file / "tokenizer.json" if file.is_dir() else file
        settings["tokenizer_sha256"] = (
            hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else ""
        )
    elif cfg.data.tokenizer == "bpe":
        settings["bpe_vocab_size"] = cfg.data.bpe_vocab_size
    return settings


def tokenize_text(cfg: Config, text: str, description: str) -> TokenData:
    """Split, tokenize (or load from the cache) and wrap a text as `TokenData`."""
    if not text:
        raise ConfigError(f"{description} is empty; set --data.path to a file with text")
    settings = tokenizer_settings(cfg)

    def build(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
        train_text, val_text = split_text(text, cfg.data.val_fraction)
        tokenizer = build_tokenizer(cfg.data, train_text)
        tokenizer.save(str(folder))
        train, val = tokenizer.encode_array(train_text), tokenizer.encode_array(val_text)
        tokens = np.concatenate([train, val]).astype(token_dtype(tokenizer.vocab_size))
        return tokens, {
            "num_train": len(train),
            "vocab_size": tokenizer.vocab_size,
            "settings": settings,
        }

    key = cache_key(text.encode("utf-8"), settings)
    tokens, meta, entry = cached_tokens(cache_root(cfg.data), key, build)
    tokenizer = load_tokenizer(str(entry))
    num_train = meta["num_train"]
    return TokenData(
        train=tokens[:num_train],
        val=tokens[num_train:],
        tokenizer=tokenizer,
        vocab_size=tokenizer.vocab_size,
        description=(
            f"{description}: {len(text):,} characters, {cfg.data.tokenizer} tokenizer with "
            f"{tokenizer.vocab_size:,} symbols, {num_train:,} train / {len(tokens) - num_train:,} "
            f"validation tokens"
        ),
    )


@DATASETS.register("shakespeare")
def shakespeare(cfg: Config) -> TokenData:
    """Shakespeare's plays (see corpus.py), about 4.6 million characters."""
    return tokenize_text(cfg, shakespeare_text(), f"Shakespeare, {len(EDITIONS)} plays")


def read_texts(path: str) -> str:
    """A UTF-8 file, or every .txt file under a folder in sorted order, one blank line between."""
    if not path:
        raise ConfigError("data.name = 'text' needs a file or folder; set --data.path=corpus.txt")
    root = Path(path).expanduser()
    if root.is_dir():
        files = sorted(root.rglob("*.txt"))
        if not files:
            raise ConfigError(
                f"data.path {path} holds no .txt files; set --data.path to a text file or a folder of .txt files"
            )
    elif root.is_file():
        files = [root]
    else:
        raise ConfigError(
            f"data.path {path} does not exist; set --data.path to a text file or a folder of .txt files"
        )
    try:
        texts = [f.read_text(encoding="utf-8").replace("\r\n", "\n") for f in files]
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"data.path must hold UTF-8 text, got undecodable bytes ({e.reason}); convert the files to UTF-8"
        ) from None
    if len(texts) == 1:
        return texts[0]
    return "\n\n".join(t.strip("\n") for t in texts) + "\n"


@DATASETS.register("text")
def text(cfg: Config) -> TokenData:
    """Your own text: one file or a folder of .txt files (`data.path`)."""
    return tokenize_text(cfg, read_texts(cfg.data.path), Path(cfg.data.path).name or cfg.data.path)


@DATASETS.register("tokens")
def tokens(cfg: Config) -> TokenData:
    """A pre-tokenized binary file of `data.token_dtype` ids, read through numpy memmap.

    The data's vocabulary is the largest id + 1, or the vocabulary of `data.tokenizer_path`
    when given and larger; a model may have a larger one (the GPT's `model.vocab_size`).
    Without `data.tokenizer_path` samples are printed as ids: there is no text tokenizer to
    decode them.
    """
    path = Path(cfg.data.path).expanduser()
    if not cfg.data.path or not path.is_file():
        raise ConfigError(
            f"data.name = 'tokens' needs a binary token file, got {cfg.data.path!r}; set --data.path=tokens.bin"
        )
    dtype = np.dtype(cfg.data.token_dtype)
    size = path.stat().st_size
    if size == 0 or size % dtype.itemsize:
        raise ConfigError(
            f"{path} must hold a whole number of {dtype.name} ids, got {size} bytes; "
            "set --data.token_dtype to the dtype it was written with"
        )
    stream = np.memmap(path, dtype=dtype, mode="r")
    largest = int(stream.max())
    tokenizer = load_tokenizer(cfg.data.tokenizer_path) if cfg.data.tokenizer_path else None
    vocab_size = max(largest + 1, tokenizer.vocab_size if tokenizer else 0)
    num_train = int(len(stream) * (1 - cfg.data.val_fraction))
    return TokenData(
        train=stream[:num_train],
        val=stream[num_train:],
        tokenizer=tokenizer or IdTokenizer(vocab_size),
        vocab_size=vocab_size,
        description=f"{path.name}: {len(stream):,} tokens of {dtype.name}, vocabulary {vocab_size:,}",
    )
