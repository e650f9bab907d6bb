"""Token caching and the `text` / `tokens` data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hone.config import Config
from hone.data.base import DATASETS
from hone.data.text import datasets
from hone.data.text.cache import cache_key, cache_root
from hone.data.text.datasets import split_text, tokenizer_settings
from hone.data.text.tokenizers import IdTokenizer
from hone.errors import ConfigError

TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(200))


def text_config(path: Path, **data: object) -> Config:
    cfg = Config()
    cfg.data.name, cfg.data.path, cfg.data.val_fraction = "text", str(path), 0.25
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def test_cache_hit_returns_the_same_tokens_without_tokenizing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "corpus.txt").write_text(TEXT)
    cfg = text_config(tmp_path / "corpus.txt", cache_dir=str(tmp_path / "cache"))
    first = DATASETS.get("text")(cfg)
    entries = list((tmp_path / "cache" / "tokens").iterdir())
    assert len(entries) == 1 and {p.name for p in entries[0].iterdir()} == {
        "tokens.bin",
        "meta.json",
        "tokenizer.json",
    }

    def no_tokenizing(*args: object) -> None:
        raise AssertionError("tokenized again despite a cached entry")

    monkeypatch.setattr(datasets, "build_tokenizer", no_tokenizing)
    second = DATASETS.get("text")(cfg)
    assert np.array_equal(first.train, second.train) and np.array_equal(first.val, second.val)
    assert first.tokenizer.decode(np.concatenate([second.train, second.val]).tolist()) == TEXT


def test_key_changes_with_text_tokenizer_and_split(tmp_path: Path) -> None:
    cfg = text_config(tmp_path, tokenizer="bpe", bpe_vocab_size=512)
    base = cache_key(TEXT.encode(), tokenizer_settings(cfg))
    assert base == cache_key(TEXT.encode(), tokenizer_settings(cfg))
    changed = [
        cache_key((TEXT + "!").encode(), tokenizer_settings(cfg)),
        cache_key(
            TEXT.encode(),
            tokenizer_settings(text_config(tmp_path, tokenizer="bpe", bpe_vocab_size=600)),
        ),
        cache_key(TEXT.encode(), tokenizer_settings(text_config(tmp_path, tokenizer="char"))),
        cache_key(
            TEXT.encode(),
            tokenizer_settings(
                text_config(tmp_path, tokenizer="bpe", bpe_vocab_size=512, val_fraction=0.1)
            ),
        ),
    ]
    assert len({base, *changed}) == 5


def test_cache_root_prefers_config_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HONE_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root(text_config(tmp_path).data) == tmp_path / "env"
    assert (
        cache_root(text_config(tmp_path, cache_dir=str(tmp_path / "cfg")).data) == tmp_path / "cfg"
    )


def test_split_is_contiguous_at_a_line_start() -> None:
    train, val = split_text(TEXT, 0.25)
    assert train + val == TEXT and train.endswith("\n")
    assert abs(len(val) / len(TEXT) - 0.25) < 0.01


def test_char_vocabulary_comes_from_the_training_split_only(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("aaaa bbbb\n" * 30 + "zzzz\n")  # 'z' only in validation
    data = DATASETS.get("text")(text_config(tmp_path / "a.txt", val_fraction=0.05))
    assert data.tokenizer.decode(data.val[-5:].tolist()) == "\ufffd" * 4 + "\n"


def test_text_folder_reads_txt_files_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second file\n" * 20)
    (tmp_path / "a.txt").write_text("first file\n" * 20)
    (tmp_path / "notes.md").write_text("ignored")
    data = DATASETS.get("text")(text_config(tmp_path, tokenizer="byte", val_fraction=0.1))
    assert data.vocab_size == 256
    stream = np.concatenate([data.train, data.val]).tolist()
    assert (
        data.tokenizer.decode(stream)
        == "first file\n" * 19 + "first file\n\n" + "second file\n" * 20
    )
    with pytest.raises(ConfigError, match="does not exist"):
        DATASETS.get("text")(text_config(tmp_path / "missing.txt"))


def test_tokens_file_vocabulary_and_split(tmp_path: Path) -> None:
    ids = np.arange(1000, dtype=np.uint16) % 97
    ids.tofile(tmp_path / "tokens.bin")
    cfg = Config()
    cfg.data.name, cfg.data.path, cfg.data.val_fraction = (
        "tokens",
        str(tmp_path / "tokens.bin"),
        0.1,
    )
    data = DATASETS.get("tokens")(cfg)
    assert data.vocab_size == 97 and isinstance(data.tokenizer, IdTokenizer)
    assert len(data.train) == 900 and np.array_equal(data.val, ids[900:])
    assert data.tokenizer.decode([3, 14]) == "3 14" and data.tokenizer.encode("3 14") == [3, 14]
    with pytest.raises(ConfigError, match="ids separated by spaces"):
        data.tokenizer.encode("To be")
    # the data reports the vocabulary it needs; a larger model.vocab_size is the GPT's business
    cfg.model.name = "gpt"
    cfg.model.vocab_size = 128
    assert DATASETS.get("tokens")(cfg).vocab_size == 97
    cfg.data.token_dtype = "uint32"
    (tmp_path / "tokens.bin").write_bytes(b"\0" * 6)
    with pytest.raises(ConfigError, match="data.token_dtype"):
        DATASETS.get("tokens")(cfg)
