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

# How long the model thread generates before handing what it has to the event loop.
CHUNK_SECONDS = 0.02


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
        self.done = False

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
