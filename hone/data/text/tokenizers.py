"""Tokenizers for language modelling: characters, UTF-8 bytes, byte-level BPE, raw token ids.

Every tokenizer saves itself as one `tokenizer.json` in a folder and `load_tokenizer` restores
any kind from it: hone's own kinds write `{"hone_tokenizer": kind, ...}`; BPE writes the
Hugging Face `tokenizers` file unchanged, so it loads in any tool that reads that format.
A pretrained checkpoint's tokenizer (a tokenizer_config.json beside the tokenizer.json) loads
as `PretrainedTokenizer` (hone.data.text.pretrained_tokenizer). Builders in `TOKENIZERS` take
the data config and the training text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hone.config import DataConfig
from hone.data.text.pretrained_tokenizer import CONFIG_FILE, PretrainedTokenizer
from hone.errors import ConfigError
from hone.registry import Registry

FILENAME = "tokenizer.json"
UNKNOWN_CHAR = "\ufffd"  # what the char tokenizer's reserved unknown id decodes to


class CharTokenizer:
    """One id per character of the training text, in code-point order, plus one unknown id.

    The vocabulary comes from the training text only, so validation text may hold characters
    it never saw; they map to the last id (`unknown_id`), which decodes to U+FFFD. Reserving
    the id keeps the vocabulary honest (no peeking at the validation split) and never fails.
    """

    kind = "char"

    def __init__(self, chars: str) -> None:
        assert len(set(chars)) == len(chars), "duplicate characters in the vocabulary"
        self.chars = "".join(sorted(chars))
        self.unknown_id = len(self.chars)
        self.vocab_size = len(self.chars) + 1
        # Sorted code points let numpy map a whole text with one searchsorted.
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    def encode_array(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codes, codes)  # position if present, insertion point if not
        found = ids < len(self._codes)
        found[found] = self._codes[ids[found]] == codes[found]
        ids[~found] = self.unknown_id
        return ids.astype(np.uint32)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] if i < self.unknown_id else UNKNOWN_CHAR for i in ids)

    def state(self) -> dict[str, Any]:
        return {"hone_tokenizer": self.kind, "chars": self.chars}

    def save(self, folder: str) -> None:
        _write_json(folder, self.state())


class ByteTokenizer:
    """The 256 UTF-8 byte values: no training, any text, ids are the bytes themselves."""

    kind = "byte"
    vocab_size = 256

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint32)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        # A sampled sequence may cut a multi-byte character; show U+FFFD instead of failing.
        return bytes(ids).decode("utf-8", errors="replace")

    def state(self) -> dict[str, Any]:
        return {"hone_tokenizer": self.kind}

    def save(self, folder: str) -> None:
        _write_json(folder, self.state())


class IdTokenizer:
    """For pre-tokenized data without a tokenizer file: text is ids separated by spaces."""

    kind = "ids"

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def encode_array(self, text: str) -> np.ndarray:
        return np.array(self.encode(text), dtype=np.uint32)

    def encode(self, text: str) -> list[int]:
        try:
            return [int(word) for word in text.split()]
        except ValueError:
            raise ConfigError(
                f"this model was trained on token ids without a tokenizer, so text must be ids "
                f"separated by spaces, got {text[:40]!r}; train with --data.tokenizer_path to use text"
            ) from None

    def decode(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))

    def state(self) -> dict[str, Any]:
        return {"hone_tokenizer": self.kind, "vocab_size": self.vocab_size}

    def save(self, folder: str) -> None:
        _write_json(folder, self.state())


class BPETokenizer:
    """A Hugging Face `tokenizers` tokenizer; trained here as GPT-2-style byte-level BPE.

    Text is encoded line by line (`encode_batch` runs the lines in parallel), so a token never
    spans a newline; decoding the ids of every line gives back the text exactly.
    """

    kind = "bpe"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer  # tokenizers.Tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing unknown
            show_progress=False,
        )
        tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: Path) -> BPETokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def encode_array(self, text: str) -> np.ndarray:
        lines = text.splitlines(keepends=True)
        encodings = self.tokenizer.encode_batch(lines, add_special_tokens=False)
        parts = [np.asarray(e.ids, dtype=np.uint32) for e in encodings]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def save(self, folder: str) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(Path(folder) / FILENAME))


TextTokenizer = CharTokenizer | ByteTokenizer | BPETokenizer | IdTokenizer | PretrainedTokenizer


def _write_json(folder: str, state: dict[str, Any]) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / FILENAME).write_text(json.dumps(state, ensure_ascii=False))


def load_tokenizer(path: str) -> TextTokenizer:
    """Restore a tokenizer from a folder written by `save`, or from a tokenizer.json file.

    A folder with a tokenizer_config.json (or a tokenizer.json beside one) is a pretrained
    checkpoint's: `PretrainedTokenizer` reads its special tokens and chat template too.
    """
    file = Path(path)
    folder = file if file.is_dir() else file.parent
    if (folder / CONFIG_FILE).is_file() and (file.is_dir() or file.name == FILENAME):
        return PretrainedTokenizer.load(folder)
    if file.is_dir():
        file = file / FILENAME
    if not file.is_file():
        raise ConfigError(
            f"no tokenizer at {path}; set --data.tokenizer_path to a tokenizer.json or a folder holding one"
        )
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{file} is not a tokenizer.json ({e}); set --data.tokenizer_path to one"
        ) from None
    match state.get("hone_tokenizer"):
        case "char":
            return CharTokenizer(state["chars"])
        case "byte":
            return ByteTokenizer()
        case "ids":
            return IdTokenizer(int(state["vocab_size"]))
        case None:  # a Hugging Face tokenizer.json
            return BPETokenizer.load(file)
        case other:
            raise ConfigError(
                f"{file} holds an unknown tokenizer kind {other!r}; expected char, byte, ids or a Hugging Face tokenizer"
            )


TOKENIZERS: Registry[Callable[[DataConfig, str], TextTokenizer]] = Registry(
    "tokenizer", "data.tokenizer"
)


@TOKENIZERS.register("char")
def char(cfg: DataConfig, train_text: str) -> TextTokenizer:
    return CharTokenizer.train(train_text)


@TOKENIZERS.register("byte")
def byte(cfg: DataConfig, train_text: str) -> TextTokenizer:
    return ByteTokenizer()


@TOKENIZERS.register("bpe")
def bpe(cfg: DataConfig, train_text: str) -> TextTokenizer:
    return BPETokenizer.train(train_text, cfg.bpe_vocab_size)


def build_tokenizer(cfg: DataConfig, train_text: str) -> TextTokenizer:
    """The tokenizer of `data.tokenizer`: loaded from `data.tokenizer_path`, else trained."""
    if not cfg.tokenizer_path:
        if cfg.tokenizer == "pretrained":  # nothing to train: a checkpoint's, named by its path
            raise ConfigError(
                "data.tokenizer = 'pretrained' reads a checkpoint's tokenizer; set "
                "--data.tokenizer_path to the checkpoint's folder"
            )
        return TOKENIZERS.get(cfg.tokenizer)(cfg, train_text)
    tokenizer = load_tokenizer(cfg.tokenizer_path)
    if tokenizer.kind != cfg.tokenizer:
        raise ConfigError(
            f"data.tokenizer must match the tokenizer in data.tokenizer_path ({tokenizer.kind}), "
            f"got {cfg.tokenizer!r}; set --data.tokenizer={tokenizer.kind}"
        )
    return tokenizer
