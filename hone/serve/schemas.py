"""The request and response bodies of `hone serve`, as pydantic models.

FastAPI turns them into the OpenAPI schema that clients (and schemathesis) read, so every
limit that can be said in a schema is said here: a too-large `max_tokens` is refused by
validation with the field's name, before any model runs. Completions follow OpenAI's
legacy completions API and chat completions its chat API, so its clients work unchanged.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# JSON numbers only: NaN and Infinity (which Python's json accepts) would come back out as
# invalid JSON; and within float32's range with room to spare for a layer's sums.
FEATURE_LIMIT = 1e12
Number = Annotated[float, Field(allow_inf_nan=False, ge=-FEATURE_LIMIT, le=FEATURE_LIMIT)]
StopText = Annotated[str, Field(min_length=1, max_length=256)]


def _integral(value: Any) -> Any:
    """JSON Schema counts 5.0 as an integer; strict pydantic would not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]


class ErrorDetail(BaseModel):
    message: str = Field(description="what went wrong and how to fix it")
    type: str = Field(description="invalid_request_error, authentication_error, …")
    param: str | None = Field(None, description="the request field at fault, if any")
    code: int = Field(description="the HTTP status code")


class ErrorResponse(BaseModel):
    """Every error, in the shape OpenAI's clients parse."""

    error: ErrorDetail


def _nested(shape: tuple[int, ...]) -> Any:
    """A JSON list type of exactly `shape` (lists of lists of numbers)."""
    kind: Any = Number
    for size in reversed(shape):
        kind = Annotated[list[kind], Field(min_length=size, max_length=size)]
    return kind


def predict_request(input_shape: tuple[int, ...]) -> type[BaseModel]:
    """The predict request for a model reading `input_shape`: each row a flat list of all its
    values, or for images the nested (H, W) or (C, H, W) lists; the schema says the sizes."""
    features = math.prod(input_shape)
    shapes: list[tuple[int, ...]] = [(features,)]
    if len(input_shape) == 3:  # (C, H, W)
        shapes += [input_shape[1:]] if input_shape[0] == 1 else []
        shapes += [input_shape]
    row: Any = Union[tuple(_nested(s) for s in shapes)]  # noqa: UP007  (a runtime union of types)

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)  # true is no number

        inputs: list[row] = Field(  # type: ignore[valid-type]  # built at run time
            min_length=1,
            description=f"rows of {features} raw features (as in training's CSV), or images as "
            f"nested lists of shape {list(input_shape)}; preprocessed as in training",
            examples=[[[0.0] * features]],
        )

    return PredictRequest


class PredictResponse(BaseModel):
    predictions: list[Any] = Field(
        description="one per row: a class label (classifiers) or a list of values (regression)"
    )
    probabilities: list[list[float]] | None = Field(
        None, description="classifiers: one probability per class and row"
    )


class SamplingRequest(BaseModel):
    """What completions and chat completions share: the model, sampling, stop strings and
    streaming."""

    # OpenAI's clients send fields we do not use; strict: "1" is no number, true no text.
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = Field(None, description="the served model's id (see /v1/models)")
    temperature: float = Field(
        1.0, ge=0.0, le=2.0, allow_inf_nan=False, description="0 picks the likeliest token"
    )
    top_k: Integer = Field(
        0, ge=0, le=1_000_000, description="sample among the k likeliest (0: all)"
    )
    top_p: float = Field(
        1.0, gt=0.0, le=1.0, allow_inf_nan=False, description="nucleus sampling mass"
    )
    seed: Integer | None = Field(
        None, ge=0, le=2**63 - 1, description="the same seed gives the same text"
    )
    stop: StopText | Annotated[list[StopText], Field(max_length=4)] | None = Field(
        None, description="up to 4 strings; the text ends before the first one generated"
    )
    stream: bool = Field(False, description="server-sent events, ending with data: [DONE]")


def completion_request(token_limit: int, prompt_limit: int) -> type[BaseModel]:
    """The completions request with this server's limits in its schema (the names differ
    from the fields': a class body does not see its function's names that it redefines)."""

    class CompletionRequest(SamplingRequest):
        prompt: str = Field(
            min_length=1, max_length=prompt_limit, description="the text to continue"
        )
        max_tokens: Integer = Field(16, ge=1, le=token_limit, description="tokens to generate")

    return CompletionRequest


class TextPart(BaseModel):
    """A part of a message's content; only text parts are read (the models read no images)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["text"]
    text: str


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = Field(
        False, description="one more chunk before [DONE]: no choices, the usage"
    )


def chat_request(token_limit: int, prompt_limit: int) -> type[BaseModel]:
    """The chat completions request (OpenAI's chat API) with this server's limits."""

    class ChatMessage(BaseModel):
        model_config = ConfigDict(extra="ignore", strict=True)

        role: Literal["system", "developer", "user", "assistant", "tool"] = Field(
            description="developer is read as system"
        )
        content: Annotated[str, Field(max_length=prompt_limit)] | list[TextPart] | None = Field(
            None, description="the text, or text parts joined by newlines"
        )

    class ChatRequest(SamplingRequest):
        messages: list[ChatMessage] = Field(
            min_length=1, description="the conversation, written by the model's chat template"
        )
        max_tokens: Integer | None = Field(
            None, ge=1, le=token_limit, description="tokens to generate (default: the limit)"
        )
        max_completion_tokens: Integer | None = Field(
            None, ge=1, le=token_limit, description="OpenAI's newer name for max_tokens; wins"
        )
        n: Integer = Field(1, ge=1, description="choices: this server makes 1 (others: 400)")
        stream_options: StreamOptions | None = Field(None, description="with stream=true")

    return ChatRequest


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatReply(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatReply
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "hone"
    task: str = Field(description="classification, binary, regression or lm")
    recipe: str
    backend: str = Field(description="torch or onnxruntime, once loaded")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: Literal["ready", "loading", "draining", "failed"]
    detail: str | None = None
