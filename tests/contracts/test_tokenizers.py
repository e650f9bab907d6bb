"""Every tokenizer in `TOKENIZERS`, chosen by `data.tokenizer` as a user chooses it: encodes its
training text into ids inside its vocabulary and decodes them back exactly, restores itself
from the folder it saves, and feeds the `text` data set a stream that decodes to the file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from hone.config import load_config
from hone.data import TokenData, build_data
from hone.data.text import TOKENIZERS, build_tokenizer, load_tokenizer
from hone.data.text.datasets import CorpusConfig

TEXT = "".join(f"{i}: To be, or not to be, that is the question.\n" for i in range(60))


def overrides(name: str, *extra: str) -> list[str]:
    return [
        "train.max_steps=1",
        "data.name=shakespeare",
        f"data.tokenizer={name}",
        "data.bpe_vocab_size=300",
        *extra,
    ]


def test_the_config_offers_exactly_the_registered_tokenizers() -> None:
    (tokenizer,) = [f for f in dataclasses.fields(CorpusConfig) if f.name == "tokenizer"]
    # "pretrained" is never trained: it names a checkpoint's tokenizer, read from
    # data.tokenizer_path (tests/pretrained/test_tokenizer.py)
    assert sorted(tokenizer.metadata["choices"]) == sorted([*TOKENIZERS.names(), "pretrained"])


@pytest.mark.parametrize("name", TOKENIZERS.names())
def test_round_trips_its_training_text_and_reloads(name: str, tmp_path: Path) -> None:
    tokenizer = build_tokenizer(load_config(None, overrides(name)).data, TEXT)
    ids = tokenizer.encode(TEXT)
    assert ids and all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.encode_array(TEXT).tolist() == ids
    assert tokenizer.decode(ids) == TEXT
    tokenizer.save(str(tmp_path / "tokenizer"))
    loaded = load_tokenizer(str(tmp_path / "tokenizer"))
    assert loaded.kind == name and loaded.vocab_size == tokenizer.vocab_size
    assert loaded.encode(TEXT) == ids and loaded.decode(ids) == TEXT


@pytest.mark.parametrize("name", TOKENIZERS.names())
def test_feeds_the_text_data_set(name: str, tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_text(TEXT)
    cfg = load_config(
        None,
        overrides(
            name,
            "data.name=text",
            f"data.path={tmp_path / 'corpus.txt'}",
            f"data.cache_dir={tmp_path / 'cache'}",
        ),
    )
    data = build_data(cfg)
    assert isinstance(data, TokenData) and data.vocab_size == data.tokenizer.vocab_size
    stream = np.concatenate([data.train, data.val])
    assert int(stream.max()) < data.vocab_size
    assert data.tokenizer.decode(stream.tolist()) == TEXT
