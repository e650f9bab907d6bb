"""Tokenizers: exact round trips, save/load through tokenizer.json, the registry's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hone.config import DataConfig
from hone.data.text.tokenizers import (
    TOKENIZERS,
    UNKNOWN_CHAR,
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    IdTokenizer,
    build_tokenizer,
    load_tokenizer,
)
from hone.errors import ConfigError

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"


def test_char_vocabulary_is_the_sorted_training_characters_plus_unknown() -> None:
    tok = CharTokenizer.train(TEXT)
    assert tok.chars == "".join(sorted(set(TEXT)))
    assert tok.vocab_size == len(set(TEXT)) + 1
    ids = tok.encode(TEXT)
    assert ids[:2] == [tok.chars.index("T"), tok.chars.index("o")]
    assert tok.decode(ids) == TEXT


def test_char_maps_unseen_characters_to_the_reserved_id() -> None:
    tok = CharTokenizer.train("abc")
    assert tok.encode("abzc") == [0, 1, 3, 2]
    assert tok.decode(tok.encode("abzc")) == f"ab{UNKNOWN_CHAR}c"


def test_byte_round_trip_of_non_ascii_text() -> None:
    tok = ByteTokenizer()
    text = "héllo, wörld ✓\n"
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8")) and max(ids) < 256
    assert tok.encode_array(text).tolist() == ids
    assert tok.decode(ids) == text


def test_bpe_trained_on_a_small_text_round_trips_and_compresses() -> None:
    text = TEXT * 30 + "Ay, there's the rub.\n\n  indented  line\n"
    tok = BPETokenizer.train(text, vocab_size=300)
    assert 256 < tok.vocab_size <= 300
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode("utf-8")) / 2  # merges learned the repeated words
    # Byte-level: characters never seen in training still round-trip.
    assert tok.decode(tok.encode("Zebra ✓ 42")) == "Zebra ✓ 42"


@pytest.mark.parametrize("kind", ["char", "byte", "bpe", "ids"])
def test_save_then_load_restores_the_same_tokenizer(kind: str, tmp_path: Path) -> None:
    tok = {
        "char": lambda: CharTokenizer.train(TEXT),
        "byte": ByteTokenizer,
        "bpe": lambda: BPETokenizer.train(TEXT * 10, vocab_size=280),
        "ids": lambda: IdTokenizer(50),
    }[kind]()
    tok.save(str(tmp_path / "tok"))
    loaded = load_tokenizer(str(tmp_path / "tok"))
    assert type(loaded) is type(tok) and loaded.vocab_size == tok.vocab_size
    sample = "3 14 15 9" if kind == "ids" else TEXT
    assert loaded.encode(sample) == tok.encode(sample)
    assert loaded.decode(tok.encode(sample)) == sample


def test_bpe_loads_from_a_saved_tokenizer_json_file(tmp_path: Path) -> None:
    tok = BPETokenizer.train(TEXT * 10, vocab_size=280)
    tok.save(str(tmp_path))
    file = tmp_path / "tokenizer.json"
    assert json.loads(file.read_text())["model"]["type"] == "BPE"  # the Hugging Face format
    cfg = DataConfig(name="text", tokenizer="bpe", tokenizer_path=str(file))
    loaded = build_tokenizer(cfg, "training text is ignored when a tokenizer is given")
    assert loaded.encode(TEXT) == tok.encode(TEXT)


def test_tokenizer_path_must_match_the_configured_kind(tmp_path: Path) -> None:
    CharTokenizer.train(TEXT).save(str(tmp_path))
    with pytest.raises(ConfigError, match="--data.tokenizer=char"):
        build_tokenizer(
            DataConfig(name="text", tokenizer="bpe", tokenizer_path=str(tmp_path)), TEXT
        )
    with pytest.raises(ConfigError, match="no tokenizer at"):
        load_tokenizer(str(tmp_path / "missing"))


def test_registry_lists_the_tokenizers() -> None:
    assert TOKENIZERS.names() == ["bpe", "byte", "char"]
    with pytest.raises(ConfigError, match="data.tokenizer.*bpe, byte, char"):
        TOKENIZERS.get("word")
