"""Chat with a language model: messages written as a prompt by the model's chat template, and a
conversation that keeps its history.

A pretrained checkpoint's tokenizer carries the template its publisher trained the model with
(hone.data.text.pretrained_tokenizer). `hone serve`'s /v1/chat/completions and `hone chat`
both render the messages with it, take its token ids as the prompt and generate through
`LoadedRun.stream`, so a reply is exactly the completion of the rendered conversation: the
same tokens, the same end-of-text ids, the same seeds as `hone sample`.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from hone.errors import ConfigError

if TYPE_CHECKING:
    from hone.data.base import Tokenizer
    from hone.engine.completion import TextStream
    from hone.engine.inference import LoadedRun


def check_chat_template(tokenizer: Tokenizer | None, name: str) -> None:
    """A one-line ConfigError when the model `name` has no chat template to write messages
    with (a run trained by hone on its own tokenizer, a base checkpoint)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError(
            f"{name} has no chat template (only a chat or instruct checkpoint has one, in its "
            f"tokenizer_config.json); give it plain text instead: `hone sample`, /v1/completions"
        )


def chat_prompt_ids(tokenizer: Tokenizer | None, messages: Sequence[dict[str, Any]]) -> list[int]:
    """The prompt ids of `messages` ({"role", "content"} dicts) followed by the opening of the
    assistant's turn, as the tokenizer's chat template writes them. Ids, not text: the
    template writes its own BOS, which encoding its text again would double."""
    check_chat_template(tokenizer, "this model")
    templated: Any = tokenizer  # a PretrainedTokenizer, the one kind that has a template
    ids: list[int] = templated.apply_chat_template(
        list(messages), add_generation_prompt=True, tokenize=True
    )
    return ids


class Conversation:
    """A chat with history: each `reply` sees the system message, every earlier turn and the
    new user message; `reset` starts over (keeping the system message)."""

    def __init__(self, loaded: LoadedRun, system: str | None = None, name: str = "") -> None:
        check_chat_template(loaded.tokenizer, name or "this model")
        self.loaded, self.system = loaded, system
        self.turns: list[dict[str, str]] = []  # user and assistant messages, in order

    @property
    def messages(self) -> list[dict[str, str]]:
        """What the template is given: the system message, then the turns."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, *self.turns]

    def reset(self) -> None:
        self.turns.clear()

    def reply(
        self,
        text: str,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
        top_p: float | None = None,
    ) -> Generator[str, None, None]:
        """The assistant's answer to the user message `text`, in pieces as they are generated.
        Once the pieces stop (all read, or the iterator closed early), the exchange joins the
        history with whatever was generated. Turn i samples with seed `seed + i`, so a whole
        conversation is reproducible while its turns draw different numbers."""
        asked = {"role": "user", "content": text}
        ids = chat_prompt_ids(self.loaded.tokenizer, [*self.messages, asked])
        turn = len(self.turns) // 2
        stream = self.loaded.stream(ids, max_new_tokens, temperature, top_k, seed + turn, top_p)
        return self._answer(asked, stream)

    def _answer(self, asked: dict[str, str], stream: TextStream) -> Generator[str, None, None]:
        parts: list[str] = []
        try:
            for piece in stream:
                parts.append(piece)
                yield piece
        finally:
            stream.close()
            self.turns += [asked, {"role": "assistant", "content": "".join(parts)}]
