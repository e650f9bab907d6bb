"""`POST /v1/chat/completions`: OpenAI's chat API, a thin layer over completions.

The messages are written by the model's chat template and their token ids are the prompt
(hone.engine.chat), which the server then completes exactly as /v1/completions completes a
prompt's ids (hone.serve.app's `generate`): the same sampling and seeds, stop strings,
end-of-text ids, limits, timeouts and stream. Only the shape of the answer differs: a
`chat.completion` holding the assistant's message, or streamed `chat.completion.chunk`s
whose deltas are the role first, then pieces of the content, then none with the finish
reason; with `stream_options.include_usage`, one more chunk with the usage and no choices.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from hone.errors import ConfigError
from hone.serve.gate import ApiError

if TYPE_CHECKING:
    from hone.data.base import Tokenizer
    from hone.serve.settings import ServeSettings


def prompt_ids(
    tokenizer: Tokenizer | None, request: Any, settings: ServeSettings, name: str
) -> list[int]:
    """The prompt ids of a validated chat request (schemas.chat_request) to the model `name`;
    an ApiError for what the server does not answer: n > 1 and a model without a chat
    template (400), content that is no text or over --max-prompt-chars (422)."""
    from hone.engine.chat import chat_prompt_ids, check_chat_template

    if request.n != 1:
        raise ApiError(
            400,
            f"n must be 1 (one choice per request), got {request.n}; send {request.n} "
            "requests with different seeds instead",
            param="n",
        )
    try:
        check_chat_template(tokenizer, repr(name))
    except ConfigError as e:
        raise ApiError(400, str(e), param="messages") from None
    messages = [_message(m, i) for i, m in enumerate(request.messages)]
    chars = sum(len(m["content"]) for m in messages)
    if chars > settings.max_prompt_chars:
        raise ApiError(
            422,
            f"messages: {chars} characters of content, over the server's limit of "
            f"{settings.max_prompt_chars} (--max-prompt-chars); send a shorter conversation",
            param="messages",
        )
    try:
        return chat_prompt_ids(tokenizer, messages)
    except ConfigError as e:  # the template refused the conversation ("roles must alternate")
        raise ApiError(400, str(e), param="messages") from None


def _message(message: Any, index: int) -> dict[str, str]:
    """A request's message as the template reads it: a role and a text."""
    content = message.content
    if isinstance(content, list):  # content parts (only text parts pass validation)
        content = "\n".join(part.text for part in content)
    content = content or ""  # an assistant turn that only called tools
    try:  # a lone surrogate (JSON allows "\\ud800") is no text a tokenizer reads
        content.encode("utf-8")
    except UnicodeEncodeError:
        param = f"messages.{index}.content"
        raise ApiError(422, f"{param}: not valid Unicode (a lone surrogate)", param=param) from None
    # OpenAI's newer name for the system role, which templates do not know.
    role = "system" if message.role == "developer" else message.role
    return {"role": role, "content": content}


class ChatForm:
    """The answer in OpenAI's chat shape (a hone.serve.generation.ResponseForm)."""

    def __init__(self, model: str, created: int, request: Any) -> None:
        self.meta = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": created, "model": model}
        options = request.stream_options
        self.include_usage = bool(options and options.include_usage)

    def response(self, text: str, finish_reason: str, usage: dict[str, Any]) -> dict[str, Any]:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        return {"object": "chat.completion", **self.meta, "choices": [choice], "usage": usage}

    def opening(self) -> list[dict[str, Any]]:
        return [self._chunk({"role": "assistant", "content": ""})]

    def piece(self, text: str) -> dict[str, Any]:
        return self._chunk({"content": text})

    def end(self, finish_reason: str, usage: dict[str, Any]) -> list[dict[str, Any]]:
        last = [self._chunk({}, finish_reason)]
        if self.include_usage:
            last.append({"object": "chat.completion.chunk", **self.meta, "choices": [], "usage": usage})  # fmt: skip
        return last

    def _chunk(self, delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"object": "chat.completion.chunk", **self.meta, "choices": [choice]}
