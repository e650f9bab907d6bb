"""The FastAPI app of `hone serve`: its routes, its error bodies and its life cycle.

Routes depend on the model: a classic model gets /v1/predict, a language model
/v1/completions (OpenAI's legacy completions API, streamed as server-sent events on request)
and /v1/chat/completions (its chat API, through the model's chat template: hone.serve.chat);
both get /v1/models, /health, /ready and /metrics. The schema therefore lists exactly what
the server answers, with every error status a route can return.

No `from __future__ import annotations` here: FastAPI reads the request models from the
route functions' annotations, and the completions model is built per server (its limits are
the server's settings), so the annotations must be objects, not strings.
"""

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hone.errors import UserError
from hone.serve import chat, schemas
from hone.serve.batching import MicroBatcher, QueueFull
from hone.serve.gate import RETRY_AFTER_SECONDS, ApiError, Gate, ServerState, error_body
from hone.serve.generation import BatchedGeneration, CompletionForm, Generation, ResponseForm
from hone.serve.metrics import ServerMetrics
from hone.serve.model import ServedModel, finite, now
from hone.serve.scheduler import QueueFull as SchedulerFull
from hone.serve.scheduler import Scheduler, SchedulerConfig
from hone.serve.settings import ServeSettings

log = logging.getLogger("hone.serve")


# One server-sent event of a streamed completion (schemathesis checks each against it).
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "description": "a chunk of the response as JSON (a piece of the text; "
            "finish_reason set on the last), an error, or [DONE]",
        },
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}
# Pydantic adds a union member's type to an error's location ("stop", "list[str]", 0);
# the field's name and indices are what a client can act on.
_FIELD_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


PREDICT = "/v1/predict"


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries of the error statuses a route can answer."""
    described = {
        400: "the body is not valid JSON",
        401: "missing or wrong API key (when the server has one)",
        404: "no such model",
        413: "the body is over the server's limit",
        422: "a field is missing, of the wrong type or out of range; `param` names it",
        429: "too many streams at once",
        503: "loading, shutting down, or the queue is full (see Retry-After)",
        504: "the request took longer than the server's timeout",
    }
    return {c: {"model": schemas.ErrorResponse, "description": described[c]} for c in codes}


def create_app(
    settings: ServeSettings,
    served: ServedModel | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> Gate:
    """The ASGI app for `settings.run`. One worker loads the model in the background after
    start-up (/health answers at once, /ready answers 503 until loaded). With `--workers N` on
    one shared socket, each worker loads before it accepts a connection, so that no request
    reaches a worker still loading while another answers /ready. `on_fatal` is told when
    loading fails."""
    served = served or ServedModel(settings)
    state = ServerState()
    metrics = ServerMetrics()
    batcher: MicroBatcher | None = None
    scheduler: Scheduler | None = None  # a language model's continuous batching

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = None
        if settings.workers > 1:
            await load()
        else:
            loader = asyncio.get_running_loop().create_task(load())
        yield
        if loader is not None:
            loader.cancel()
        if batcher is not None:
            await batcher.stop()
        if scheduler is not None:
            scheduler.stop()
        served.close()

    async def load() -> None:
        nonlocal batcher, scheduler
        try:
            await asyncio.get_running_loop().run_in_executor(served.executor, served.load)
            loaded = served.loaded
            assert loaded is not None
            if served.generates_text and Scheduler.supports(loaded):
                scheduler = await asyncio.get_running_loop().run_in_executor(
                    served.executor, lambda: Scheduler(loaded, scheduler_config(), metrics)
                )
                scheduler.start()
        except Exception as e:  # reported, and the server told to stop
            state.status, state.detail = "failed", str(e)
            message = str(e) if isinstance(e, UserError) else f"cannot load {settings.run}: {e}"
            if on_fatal is not None:  # `hone serve` stops with this one line
                on_fatal(message)
            else:
                log.error("hone serve: %s", message)
            return
        if not served.generates_text:
            batcher = MicroBatcher(
                served.predict,
                served.executor,
                metrics,
                settings.max_batch,
                settings.max_wait_ms / 1000,
                settings.max_queue,
                incoming=lambda: state.by_route.get(PREDICT, 0),
            )
            batcher.start()
        state.status = "ready"
        log.info("hone serve: %s ready (%s, %s)", served.name, served.task, served.backend)

    app = FastAPI(
        title="hone serve",
        version="1",
        description=f"Predictions from the hone run `{served.name}` ({served.task}).",
        lifespan=lifespan,
    )
    _error_handlers(app)

    def scheduler_config() -> SchedulerConfig:
        return SchedulerConfig(
            settings.kv_cache_mb, settings.max_seqs, settings.max_queue,
            settings.batch_invariant, settings.prefill_chunk,
        )  # fmt: skip

    def ready() -> None:
        if state.status != "ready":
            raise ApiError(
                503,
                f"the model is {state.status}; wait until GET /ready answers 200",
                "unavailable_error",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )

    @app.get("/health", response_model=schemas.Health, tags=["probes"])
    async def health() -> dict[str, str]:
        """The process is alive (no key needed)."""
        return {"status": "alive"}

    @app.get(
        "/ready",
        response_model=schemas.Readiness,
        responses={503: {"model": schemas.Readiness, "description": "loading or draining"}},
        tags=["probes"],
    )
    async def ready_route() -> Any:
        """200 once the model is loaded; 503 while loading or draining."""
        body = {"status": state.status, "detail": state.detail}
        return JSONResponse(body, status_code=200 if state.status == "ready" else 503)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
        tags=["probes"],
    )
    async def metrics_route() -> Response:
        """Prometheus metrics: requests, latencies, batch sizes, queue depth, tokens."""
        return Response(metrics.exposition(), media_type=metrics.content_type)

    @app.get("/v1/models", response_model=schemas.ModelList, responses=_errors(401))
    async def models() -> dict[str, Any]:
        """The one model this server answers with."""
        return {"object": "list", "data": [served.card()]}

    if served.generates_text:
        request_model = schemas.completion_request(settings.max_tokens, settings.max_prompt_chars)
        chat_model = schemas.chat_request(settings.max_tokens, settings.max_prompt_chars)
        generated = {
            200: {
                "content": {"text/event-stream": {"schema": SSE_EVENT}},
                "description": "the answer, or with stream=true server-sent events",
            },
            **_errors(400, 401, 404, 413, 422, 429, 503, 504),
        }

        @app.post("/v1/completions", response_model=schemas.CompletionResponse, responses=generated)
        async def completions(body: request_model, request: Request) -> Any:  # type: ignore[valid-type]
            """OpenAI-compatible completions; the same seed gives the same text."""
            ready()
            req: Any = body
            served_model(req.model)
            try:  # a lone surrogate (JSON allows "\\ud800") is no text a tokenizer reads
                req.prompt.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(
                    422, "prompt: not valid Unicode (a lone surrogate)", param="prompt"
                ) from None
            form = CompletionForm(served.name, now())
            return await generate(req, req.prompt, req.max_tokens, form, request)

        # In the schema only for a model with a chat template; another answers 400 saying so.
        @app.post(
            "/v1/chat/completions",
            response_model=schemas.ChatCompletionResponse,
            responses=generated,
            include_in_schema=served.chats,
        )
        async def chat_completions(body: chat_model, request: Request) -> Any:  # type: ignore[valid-type]
            """OpenAI-compatible chat completions: the messages written by the model's chat
            template, completed as /v1/completions completes a prompt."""
            ready()
            req: Any = body
            served_model(req.model)
            assert served.loaded is not None
            ids = chat.prompt_ids(served.loaded.tokenizer, req, settings, served.name)
            max_tokens = req.max_completion_tokens or req.max_tokens or settings.max_tokens
            form = chat.ChatForm(served.name, now(), req)
            return await generate(req, ids, max_tokens, form, request)

        def served_model(name: str | None) -> None:
            if name not in (None, served.name):
                raise ApiError(
                    404, f"model {name!r} is not served here; use {served.name!r}", param="model"
                )

        async def generate(req: Any, prompt: str | list[int], max_tokens: int, form: ResponseForm, request: Request) -> Any:  # fmt: skip
            """The answer to a validated request for `max_tokens` after `prompt`, whole or
            streamed, written by `form`."""
            seed = req.seed if req.seed is not None else secrets.randbelow(2**63)
            stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
            top_k, top_p = req.top_k or None, req.top_p if req.top_p < 1 else None
            assert served.loaded is not None
            generation: Generation | BatchedGeneration
            if req.stream and state.streams >= settings.max_streams:
                raise too_many_streams()
            if scheduler is not None:
                try:
                    sequence = scheduler.submit(
                        prompt, max_tokens, req.temperature, top_k, top_p, seed, stop, req.stream
                    )
                except SchedulerFull:
                    raise ApiError(
                        503,
                        f"{settings.max_queue} completions are waiting (--max-queue); retry shortly",
                        "unavailable_error",
                        headers={"Retry-After": RETRY_AFTER_SECONDS},
                    ) from None
                generation = BatchedGeneration(scheduler, sequence)
            else:
                generation = Generation(
                    served.loaded, served.executor, prompt, max_tokens, req.temperature,
                    top_k, top_p, seed, stop,
                )  # fmt: skip
            deadline = time.monotonic() + settings.timeout_s
            if req.stream:
                return await stream(generation, deadline, form)
            try:
                text = await asyncio.wait_for(
                    _unless_disconnected(request, generation.text()), settings.timeout_s
                )
            except TimeoutError:
                raise ApiError(504, _timeout_message(settings), "timeout_error") from None
            except ClientGone:  # no one reads the answer; the slot is free
                return Response(status_code=499)
            finally:
                generation.close()
            metrics.observe_generation(generation.completion_tokens, generation.seconds)
            return form.response(text, generation.finish_reason, generation.usage())

        def too_many_streams() -> ApiError:
            return ApiError(
                429,
                f"{settings.max_streams} streams are running (--max-streams); retry shortly",
                "rate_limit_error",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )

        async def stream(generation: Generation | BatchedGeneration, deadline: float, form: ResponseForm) -> Response:  # fmt: skip
            if state.streams >= settings.max_streams:
                generation.close()
                raise too_many_streams()
            state.streams += 1
            metrics.streams.inc()
            try:  # the first piece before the status: a prompt the model cannot read is a 422
                first = await asyncio.wait_for(generation.next_piece(), settings.timeout_s)
            except BaseException as e:
                state.streams -= 1
                metrics.streams.dec()
                generation.close()
                if isinstance(e, TimeoutError):
                    raise ApiError(504, _timeout_message(settings), "timeout_error") from None
                raise
            return StreamingResponse(
                events(generation, first, deadline, form), media_type="text/event-stream"
            )

        async def events(
            generation: Generation | BatchedGeneration,
            first: str | None,
            deadline: float,
            form: ResponseForm,
        ) -> AsyncIterator[str]:
            def event(data: dict[str, Any]) -> str:
                return f"data: {json.dumps(data)}\n\n"

            try:
                for opening in form.opening():
                    yield event(opening)
                piece = first
                while piece is not None:
                    yield event(form.piece(piece))
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    piece = await asyncio.wait_for(generation.next_piece(), left)
                for last in form.end(generation.finish_reason, generation.usage()):
                    yield event(last)
                metrics.observe_generation(generation.completion_tokens, generation.seconds)
            except TimeoutError:  # the status is sent: the error goes in the stream
                yield f"data: {error_body(504, _timeout_message(settings), 'timeout_error').decode()}\n\n"
            finally:
                state.streams -= 1
                metrics.streams.dec()
                generation.close()
            yield "data: [DONE]\n\n"

    else:
        predict_model = schemas.predict_request(served.input_shape)

        @app.post(
            PREDICT,
            response_model=schemas.PredictResponse,
            response_model_exclude_none=True,
            responses=_errors(400, 401, 413, 422, 503, 504),
        )
        async def predict(body: predict_model) -> Response:  # type: ignore[valid-type]
            """Predictions (and class probabilities) for rows of raw features, exactly as
            `hone predict` computes them."""
            ready()
            assert batcher is not None
            try:
                rows = served.rows(body.inputs)  # type: ignore[attr-defined]
            except UserError as e:
                raise ApiError(422, str(e), param="inputs") from None
            try:
                result = await asyncio.wait_for(batcher.submit(rows), settings.timeout_s)
            except QueueFull:
                raise ApiError(
                    503,
                    f"{settings.max_queue} requests are waiting (--max-queue); retry shortly",
                    "unavailable_error",
                    headers={"Retry-After": RETRY_AFTER_SECONDS},
                ) from None
            except TimeoutError:
                raise ApiError(504, _timeout_message(settings), "timeout_error") from None
            if not finite(result):
                raise ApiError(
                    422,
                    "the model's outputs for these inputs are not finite numbers; check that "
                    "the inputs are on the scale of the training data",
                    param="inputs",
                )
            # Built here, not by FastAPI from response_model: validating every probability
            # again on the way out cost more than the model call (bench/serve_load.py).
            return JSONResponse(result)

    return Gate(app, state, metrics, {r.path for r in app.routes}, settings.api_key, settings.max_body_bytes)  # type: ignore[attr-defined]  # fmt: skip


class ClientGone(Exception):
    """The client of a request closed its connection before the answer."""


async def _unless_disconnected(request: Request, work: Any) -> Any:
    """`await work`, unless the client hangs up first (ClientGone; the work is cancelled)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone
    finally:
        task.cancel()


def _timeout_message(settings: ServeSettings) -> str:
    return (
        f"the request took longer than {settings.timeout_s:g} s (--timeout); ask for less "
        "(fewer rows, fewer max_tokens) or raise the server's --timeout"
    )


def _error_handlers(app: FastAPI) -> None:
    """Every error as {"error": {"message", "type", "param", "code"}}; never a bare 500."""

    def answer(status: int, message: str, kind: str, param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
        body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return answer(e.status, e.message, e.kind, e.param, e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = list(e.errors())
        if any(err.get("type") == "json_invalid" for err in errors):
            return answer(400, "the request body is not valid JSON", "invalid_request_error")
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        path = [
            str(p) for p in first.get("loc", ())[1:] if isinstance(p, int) or _FIELD_PART.match(p)
        ]
        param = ".".join(path) or None
        if param is None and first.get("type") == "model_attributes_type":
            message = "the body must be a JSON object; send it with Content-Type: application/json"
        else:
            message = f"{param}: {first['msg']}" if param else str(first["msg"])
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        return answer(422, message, "invalid_request_error", param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return answer(
            e.status_code, str(e.detail), "invalid_request_error", headers=dict(e.headers or {})
        )

    @app.exception_handler(UserError)
    async def user_error(request: Request, e: UserError) -> JSONResponse:
        return answer(422, str(e), "invalid_request_error")
