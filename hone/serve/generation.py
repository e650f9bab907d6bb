"""One completion, generated a token at a time in the model's thread.

`LoadedRun.stream` yields text pieces; each piece is computed in the model thread, and the
event loop runs in between, so concurrent completions take turns token by token and a slow
one cannot starve a short one. Generation steps are not batched across requests: a batch
changes the floating-point reductions of each row, and the same seed must give the same text
as `hone sample` and as the streamed call.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hone.engine.inference import LoadedRun

_END = object()


class Generation:
    """The text pieces of one completion, awaited one by one."""

    def __init__(
        self,
        loaded: LoadedRun,
        executor: Executor,
        prompt: str,
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
        self.started = time.perf_counter()
        self.seconds = 0.0

    async def next_piece(self) -> str | None:
        """The next piece of text, or None once generation has finished."""
        loop = asyncio.get_running_loop()
        piece = await loop.run_in_executor(self.executor, next, self.stream, _END)
        if piece is _END:
            self.seconds = time.perf_counter() - self.started
            return None
        assert isinstance(piece, str)
        return piece

    async def text(self) -> str:
        parts = []
        while (piece := await self.next_piece()) is not None:
            parts.append(piece)
        return "".join(parts)

    def close(self) -> None:
        """Stop generating (the client went away or the request timed out)."""
        self.executor.submit(self.stream.close)

    @property
    def finish_reason(self) -> str:
        assert self.stream.completion is not None, "generation has not finished"
        return self.stream.completion.finish_reason

    @property
    def completion_tokens(self) -> int:
        assert self.stream.completion is not None, "generation has not finished"
        return self.stream.completion.completion_tokens

    def usage(self) -> dict[str, Any]:
        assert self.stream.completion is not None, "generation has not finished"
        done = self.stream.completion
        return {
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
        }
