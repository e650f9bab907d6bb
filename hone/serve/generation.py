"""One completion as the event loop awaits it, piece by piece.

`BatchedGeneration`: the scheduler (hone.serve.scheduler) generates it in one batch with the
other running completions, and hands its pieces over through an asyncio queue; hone's GPT
and the Llama family are served so. `Generation`: a model that decodes through no key/value
cache (an ONNX graph) runs `LoadedRun.stream` in the model thread, one completion's chunk of
tokens at a time, taking turns with the others.

A `ResponseForm` writes the result in one API's shape, whole or streamed: `CompletionForm`
for /v1/completions, `hone.serve.chat.ChatForm` for /v1/chat/completions.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hone.engine.inference import LoadedRun
    from hone.serve.scheduler import Scheduler, Sequence

# How long the model thread generates before handing what it has to the event loop.
CHUNK_SECONDS = 0.02


class _Pieces:
    """What both kinds of generation give once their pieces are awaited: the whole text, and
    the finished Completion's reason and token counts. Subclasses define `next_piece` and
    `_completion` (None until generation has finished)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds = 0.0  # set once generation has finished
        self.done = False

    async def next_piece(self) -> str | None:
        raise NotImplementedError

    @property
    def _completion(self) -> Any:
        raise NotImplementedError

    async def text(self) -> str:
        parts = []
        while (piece := await self.next_piece()) is not None:
            parts.append(piece)
        return "".join(parts)

    def _done(self) -> Any:
        done = self._completion
        assert done is not None, "generation has not finished"
        return done

    @property
    def finish_reason(self) -> str:
        return str(self._done().finish_reason)

    @property
    def completion_tokens(self) -> int:
        return int(self._done().completion_tokens)

    def usage(self) -> dict[str, Any]:
        done = self._done()
        return {
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
        }


class Generation(_Pieces):
    """The text pieces of one completion, awaited one by one."""

    def __init__(
        self,
        loaded: LoadedRun,
        executor: Executor,
        prompt: str | list[int],  # text, or a chat template's ids
        max_tokens: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        seed: int,
        stop: list[str],
    ) -> None:
        self.executor = executor
        # Encodes the prompt now (a prompt the tokenizer refuses is a ConfigError here);
        # the tokens come one `next` at a time.
        self.stream = loaded.stream(
            prompt, max_tokens, temperature, top_k=top_k, seed=seed, top_p=top_p, stop=stop
        )
        super().__init__()

    async def next_piece(self) -> str | None:
        """The next piece of text, or None once generation has finished."""
        if self.done:
            return None
        loop = asyncio.get_running_loop()
        piece = await loop.run_in_executor(self.executor, self._pull)
        if self.done:
            self.seconds = time.perf_counter() - self.started
        return piece if piece or not self.done else None

    def _pull(self) -> str:
        """Tokens for up to CHUNK_SECONDS, in the model thread.

        One hop between the event loop and the model thread per token cost up to 10x the
        generation time on a busy 2-core machine (torch's threads spin between the calls);
        a chunk of tokens per hop keeps streaming smooth without that cost.
        """
        parts: list[str] = []
        deadline = time.perf_counter() + CHUNK_SECONDS
        while time.perf_counter() < deadline or not parts:
            piece = next(self.stream, None)
            if piece is None:
                self.done = True
                break
            parts.append(piece)
        return "".join(parts)

    def close(self) -> None:
        """Stop generating (the client went away or the request timed out)."""
        self.executor.submit(self.stream.close)

    @property
    def _completion(self) -> Any:
        return self.stream.completion


class BatchedGeneration(_Pieces):
    """The text pieces of one completion that the scheduler generates in a batch with the
    others (hone.serve.scheduler); the same interface as Generation."""

    def __init__(self, scheduler: Scheduler, sequence: Sequence) -> None:
        self.scheduler, self.sequence = scheduler, sequence
        super().__init__()

    async def next_piece(self) -> str | None:
        """The next piece of text, or None once generation has finished."""
        if self.done:
            return None
        item = await self.sequence.out.get()
        parts: list[str] = []
        while True:  # all the pieces that have arrived, as one
            if item is None:
                self.done = True
                self.seconds = time.perf_counter() - self.started
                break
            if isinstance(item, BaseException):
                self.done = True
                raise item
            parts.append(item)
            if self.sequence.out.empty():
                break
            item = self.sequence.out.get_nowait()
        return "".join(parts) if parts or not self.done else None

    def close(self) -> None:
        """Stop generating (the client went away or the request timed out): the slot frees."""
        if self.sequence.completion is None:
            self.scheduler.cancel(self.sequence)

    @property
    def _completion(self) -> Any:
        return self.sequence.completion


class ResponseForm(Protocol):
    """How one API writes what a Generation made: the whole response, or the JSON of its
    stream's server-sent events (those before the first piece, one per piece, the last)."""

    def response(self, text: str, finish_reason: str, usage: dict[str, Any]) -> dict[str, Any]: ...

    def opening(self) -> list[dict[str, Any]]: ...

    def piece(self, text: str) -> dict[str, Any]: ...

    def end(self, finish_reason: str, usage: dict[str, Any]) -> list[dict[str, Any]]: ...


class CompletionForm:
    """OpenAI's legacy completions: `text_completion` objects, the stream's last chunk empty
    with the finish reason. (Chat's form: hone.serve.chat.ChatForm.)"""

    def __init__(self, model: str, created: int) -> None:
        self.meta = {
            "object": "text_completion",
            "id": f"cmpl-{secrets.token_hex(12)}",
            "created": created,
            "model": model,
        }

    def response(self, text: str, finish_reason: str, usage: dict[str, Any]) -> dict[str, Any]:
        return {**self.piece(text, finish_reason), "usage": usage}

    def opening(self) -> list[dict[str, Any]]:
        return []

    def piece(self, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        return {**self.meta, "choices": [choice]}

    def end(self, finish_reason: str, usage: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.piece("", finish_reason)]
