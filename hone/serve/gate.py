"""The door every request passes: metrics, the API key, the body limit and the drain.

One pure ASGI middleware, outermost, so that a refused request (401, 413, 503 while
draining) is counted in the metrics like any other, and no route runs before its body is
known to be within the limit. The body is read here, bounded, and replayed to the app:
a request without Content-Length (chunked) is held to the same limit.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from hone.serve.metrics import ServerMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Probes answer at once and must work without a key (/health) or while draining.
PROBES = ("/health", "/ready", "/metrics")
OPEN_ROUTES = ("/health",)
RETRY_AFTER_SECONDS = "1"


@dataclass
class ServerState:
    """Loading, ready, draining or failed; and the requests being answered."""

    status: str = "loading"
    detail: str | None = None
    in_flight: int = 0
    by_route: dict[str, int] = field(default_factory=dict)  # requests in flight, per route
    streams: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()


class ApiError(Exception):
    """An error answered as {"error": {...}} with `status` (the app's handler writes it)."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param
        self.headers = headers


def error_body(status: int, message: str, kind: str, param: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": status}}
    ).encode()


async def send_error(
    send: Send,
    status: int,
    message: str,
    kind: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = error_body(status, message, kind)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Gate:
    """Wraps the FastAPI app: count, authenticate, bound the body, track in-flight work."""

    def __init__(
        self,
        app: ASGIApp,
        state: ServerState,
        metrics: ServerMetrics,
        routes: set[str],
        api_key: str | None,
        max_body_bytes: int,
    ) -> None:
        self.app, self.state, self.metrics, self.routes = app, state, metrics, routes
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in self.routes else "other"  # bounded label values
        status = 500
        start = time.perf_counter()

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        work = path not in PROBES
        if work:
            self._enter(route)
        try:
            await self._serve(scope, receive, counted_send, path, work)
        finally:
            if work:
                self._leave(route)
            self.metrics.observe_request(route, status, time.perf_counter() - start)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, path: str, work: bool
    ) -> None:
        if self.api_key is not None and path not in OPEN_ROUTES and not self._authorized(scope):
            await send_error(
                send,
                401,
                "missing or wrong API key; send the header `Authorization: Bearer KEY`",
                "authentication_error",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        if work and self.state.status == "draining":
            await send_error(
                send,
                503,
                "the server is shutting down; retry on another replica",
                "unavailable_error",
                [(b"retry-after", RETRY_AFTER_SECONDS.encode())],
            )
            return
        body = await self._read_body(scope, receive)
        if body is None:
            await send_error(
                send,
                413,
                f"request body over {self.max_body_bytes} bytes; send fewer inputs per request "
                "or start the server with a larger --max-body-bytes",
                "invalid_request_error",
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # http.disconnect, for streaming responses

        await self.app(scope, replay, send)

    def _authorized(self, scope: Scope) -> bool:
        assert self.api_key is not None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                # Constant time: the comparison's duration tells nothing about the key.
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    token.strip(), self.api_key
                )
        return False

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None when it is over the limit (declared or counted)."""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                if int(value) > self.max_body_bytes:
                    return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _enter(self, route: str) -> None:
        self.state.by_route[route] = self.state.by_route.get(route, 0) + 1
        self.state.in_flight += 1
        self.state.idle.clear()
        self.metrics.in_flight.inc()

    def _leave(self, route: str) -> None:
        self.state.by_route[route] -= 1
        self.state.in_flight -= 1
        self.metrics.in_flight.dec()
        if self.state.in_flight == 0:
            self.state.idle.set()
