"""What a language model writes after a prompt, piece by piece: the `Completion` with why it
ended, the `TextStream` of its pieces, and the rule for how much decoded text is final."""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass
class Completion:
    """What a language model wrote after a prompt, and why it ended (the fields a server's
    response needs: OpenAI's `finish_reason` and `usage`)."""

    text: str  # the generated text, without the prompt and without the stop string
    # "stop": a stop string appeared or the model ended its text (drew an end-of-text id of
    # a pretrained tokenizer); "length": max_new_tokens ran out
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int  # every token generated, those of the stop string included


class TextStream(Iterator[str]):
    """The pieces of a completion's text as it is generated: their concatenation is the text
    that `LoadedRun.complete` returns for the same arguments. `completion` is set once the
    iteration ends; `close()` stops generating early."""

    def __init__(self, pieces: Generator[str, None, Completion]) -> None:
        self._pieces = pieces
        self.completion: Completion | None = None

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as end:
            self.completion = end.value
            raise

    def close(self) -> None:
        self._pieces.close()


def first_stop(text: str, stop: Sequence[str]) -> int | None:
    """Where the earliest stop string in `text` begins, or None."""
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(found) if found else None


def shown_length(text: str, stop: Sequence[str]) -> int:
    """How much of the text decoded so far can be shown for good.

    Held back: a trailing U+FFFD, which a byte or BPE tokenizer decodes while a multi-byte
    character's bytes are still arriving, and then the longest tail that begins a stop string
    (the complete text would end before it). Text before that never changes, so no stop
    string can begin in it later.
    """
    end = len(text.rstrip("\ufffd"))
    held = 0  # the longest tail text[end - k : end] that is the first k characters of a stop
    for s in stop:
        for k in range(min(len(s) - 1, end), held, -1):
            if text.endswith(s[:k], 0, end):
                held = k
                break
    return end - held
