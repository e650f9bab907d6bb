"""Dynamic micro-batching: concurrent predict requests share one model call.

A request's rows join a queue; one worker task takes the oldest request and, while other
predict requests are on their way in (`incoming()`: inside the server, not yet queued), waits
up to `max_wait_s` after the oldest one's arrival for them, until the batch holds `max_batch`
rows. Then it runs the model once on their concatenation (in the model's own thread, so the
event loop keeps accepting requests) and hands each request its rows of the result. A lone
request never waits: waiting pays only when there is company to wait for.

The queue is bounded: past `max_queue` waiting requests, `submit` raises `QueueFull` at once
(the server answers 503 with Retry-After) instead of letting latency grow without limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import torch

from hone.serve.metrics import ServerMetrics


class QueueFull(Exception):
    """The predict queue holds `max_queue` requests already."""


@dataclass
class _Pending:
    rows: torch.Tensor  # (n, features)
    future: asyncio.Future[dict[str, Any]]
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """Collects rows from concurrent requests into batches for `run_batch`."""

    def __init__(
        self,
        run_batch: Callable[[torch.Tensor], dict[str, Any]],
        executor: Executor,
        metrics: ServerMetrics,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        incoming: Callable[[], int] = lambda: 0,
    ) -> None:
        self.run_batch, self.executor, self.metrics = run_batch, executor, metrics
        self.incoming = incoming
        self.answered = 0  # answered, their handlers not yet resumed (still in `incoming`)
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.queue: deque[_Pending] = deque()
        self._arrival = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, rows: torch.Tensor) -> dict[str, Any]:
        """The model's result for `rows` (n, features), computed in some batch."""
        if len(self.queue) >= self.max_queue:
            raise QueueFull
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.queue.append(_Pending(rows, future))
        self.metrics.queue_depth.inc()
        self._arrival.set()
        try:
            return await future
        finally:
            if not future.done():  # the caller gave up (timeout, disconnect): drop its rows
                future.cancel()
            elif not future.cancelled() and future.exception() is None:
                self.answered -= 1  # back in its handler: on its way out

    async def _work(self) -> None:
        while True:
            while not self.queue:
                self._arrival.clear()
                await self._arrival.wait()
            deadline = self.queue[0].arrived + self.max_wait_s
            while self._rows_waiting() < self.max_batch and self._company():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrival.clear()
                try:
                    await asyncio.wait_for(self._arrival.wait(), left)
                except TimeoutError:
                    break
            batch = self._take()
            if batch:
                await self._run(batch)

    def _company(self) -> bool:
        """Predict requests in the server that have not reached the queue yet."""
        return self.incoming() > len(self.queue) + self.answered

    def _rows_waiting(self) -> int:
        return sum(len(p.rows) for p in self.queue if not p.future.done())

    def _take(self) -> list[_Pending]:
        """The oldest requests whose rows fit in one batch (at least one request)."""
        batch: list[_Pending] = []
        rows = 0
        while self.queue:
            pending = self.queue[0]
            if pending.future.done():  # cancelled while waiting
                self.queue.popleft()
                self.metrics.queue_depth.dec()
                continue
            if batch and rows + len(pending.rows) > self.max_batch:
                break
            batch.append(self.queue.popleft())
            self.metrics.queue_depth.dec()
            rows += len(pending.rows)
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        x = torch.cat([p.rows for p in batch])
        self.metrics.batch_size.observe(len(x))
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self.executor, self.run_batch, x)
        except Exception as error:  # every request of the batch learns why
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        start = 0
        for p in batch:
            end = start + len(p.rows)
            if not p.future.done():
                p.future.set_result({k: v[start:end] for k, v in result.items()})
                self.answered += 1
            start = end
