"""Chat through a checkpoint's chat template: `hone serve`'s /v1/chat/completions with the
openai client, streamed and not, and `hone chat` in a terminal's place.

The checkpoint is the tiny Llama given a ChatML template (with `{{ bos_token }}`: the prompt
must hold one BOS, not two) and, in generation_config.json, a second end-of-text id: the
token that greedy decoding draws after a few tokens of a known conversation, so that
generation demonstrably stops there. Every answer is compared with greedy decoding by
`transformers` on the prompt written out by hand, stopped at the same end-of-text ids.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import torch

from tests import forking
from tests.conftest import ROOT
from tests.pretrained.conftest import EOS

transformers = pytest.importorskip("transformers")
pytest.importorskip("fastapi")

CHATML = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The conversation whose greedy reply ends at the added end-of-text id, after STOP_AFTER
# tokens of text.
STOPPING = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]


def written(messages: list[dict[str, str]]) -> str:
    """What CHATML writes for `messages` and the opening of the assistant's turn."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return f"<s>{turns}<|im_start|>assistant\n"


class Reference:
    """Greedy decoding by transformers on the checkpoint, and its tokenizer's ids and text."""

    def __init__(self, folder: Path) -> None:
        from hone.data.text.pretrained_tokenizer import PretrainedTokenizer

        self.model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
        self.tokenizer = PretrainedTokenizer.load(folder)
        self.eos = {EOS}

    def prompt(self, messages: list[dict[str, str]]) -> list[int]:
        ids = self.tokenizer.encode(written(messages), add_special_tokens=False)
        assert ids.count(0) == 1, "one BOS"
        return ids

    def tokens(self, ids: list[int], max_tokens: int) -> list[int]:
        assert len(ids) + max_tokens <= 128, "within the tiny model's context"
        tokens: list[int] = []
        with torch.no_grad():
            while len(tokens) < max_tokens and not (tokens and tokens[-1] in self.eos):
                logits = self.model(torch.tensor([ids + tokens])).logits[0, -1]
                tokens.append(int(logits.argmax()))
        return tokens

    def reply(self, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        """What the server should answer: the text, why it ended and the usage."""
        ids = self.prompt(messages)
        tokens = self.tokens(ids, max_tokens)
        stopped = tokens[-1] in self.eos
        return {
            "text": self.tokenizer.decode(tokens[:-1] if stopped else tokens),
            "finish_reason": "stop" if stopped else "length",
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": len(tokens),
                "total_tokens": len(ids) + len(tokens),
            },
        }


@pytest.fixture(scope="module")
def _cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Checkpoint views in the session's cache, for the module's fixtures too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HONE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hone-cache"))
        yield


@pytest.fixture(scope="module")
def chat_checkpoint(
    tiny_checkpoint: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Reference]:
    """The tiny Llama with CHATML, and an end-of-text id greedy decoding draws in its reply
    to STOPPING; with the reference that decodes it."""
    folder = tmp_path_factory.mktemp("chat") / "tiny-chat"
    shutil.copytree(tiny_checkpoint("llama"), folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = CHATML
    config_file.write_text(json.dumps(config))
    reference = Reference(folder)
    free = reference.tokens(reference.prompt(STOPPING), 8)
    # The first token after the second that greedy decoding has not drawn before.
    stop_at = next(k for k in range(2, 8) if free[k] not in free[:k])
    assert EOS not in free[:stop_at], free
    generation_file = folder / "generation_config.json"
    generation = json.loads(generation_file.read_text())
    generation["eos_token_id"] = [EOS, free[stop_at]]
    generation_file.write_text(json.dumps(generation))
    reference.eos = {EOS, free[stop_at]}
    return folder, reference


@contextmanager
def serving(folder: Path) -> Iterator[Any]:
    """A TestClient of `hone serve FOLDER`'s app, once the model is loaded."""
    from starlette.testclient import TestClient

    from hone.serve.app import create_app
    from hone.serve.settings import ServeSettings

    with TestClient(create_app(ServeSettings(run=str(folder), threads=1))) as client:
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ready").text
            time.sleep(0.02)
        yield client


@pytest.fixture(scope="module")
def client(chat_checkpoint: tuple[Path, Reference], _cache: None) -> Iterator[Any]:
    with serving(chat_checkpoint[0]) as test_client:
        yield test_client


def _openai(client: Any) -> Any:
    openai = pytest.importorskip("openai")
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0
    )


def test_a_chat_answer_is_greedy_decoding_of_the_template_prompt(client, chat_checkpoint):
    _, reference = chat_checkpoint
    api = _openai(client)
    for max_tokens in (2, 8):  # cut by max_tokens, then ended by the end-of-text id
        expected = reference.reply(STOPPING, max_tokens)
        assert expected["finish_reason"] == ("length" if max_tokens == 2 else "stop")
        answer = api.chat.completions.create(
            model="tiny-chat", messages=STOPPING, max_tokens=max_tokens, temperature=0, seed=3
        )
        assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
        (choice,) = answer.choices
        assert choice.message.role == "assistant"
        assert choice.message.content == expected["text"]
        assert choice.finish_reason == expected["finish_reason"]
        assert answer.usage.model_dump(exclude_none=True) == expected["usage"]


def test_a_streamed_chat_answer_is_the_same_text_in_chunks(client, chat_checkpoint):
    _, reference = chat_checkpoint
    messages = [{"role": "user", "content": "The quick brown fox"}]
    expected = reference.reply(messages, 6)
    chunks = list(
        _openai(client).chat.completions.create(
            model="tiny-chat",
            messages=messages,
            max_completion_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    *answer, usage = chunks
    assert answer[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in answer) == expected["text"]
    reasons = [c.choices[0].finish_reason for c in answer]
    assert reasons[-1] == expected["finish_reason"] and not any(reasons[:-1])
    assert usage.choices == [] and usage.usage.model_dump(exclude_none=True) == expected["usage"]
    # On the wire: the role first, then content, an empty delta that ends, then [DONE].
    raw = client.post(
        "/v1/chat/completions",
        json={"messages": messages, "max_tokens": 6, "temperature": 0, "stream": True},
    )
    events = [line.removeprefix("data: ") for line in raw.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""} and deltas[-1] == {}
    assert "".join(d["content"] for d in deltas[1:-1]) == expected["text"]


def test_what_the_chat_route_refuses(client, chat_checkpoint, tiny_checkpoint):
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError) as refused:
        _openai(client).chat.completions.create(
            model="tiny-chat", messages=STOPPING, max_tokens=2, n=2
        )
    assert refused.value.status_code == 400 and refused.value.body["param"] == "n"

    def error(body: dict[str, Any]) -> tuple[int, str | None]:
        answer = client.post("/v1/chat/completions", json=body)
        return answer.status_code, answer.json()["error"]["param"]

    assert error({"messages": []}) == (422, "messages")
    assert error({"messages": [{"role": "robot", "content": "hi"}]}) == (422, "messages.0.role")
    assert error({"messages": STOPPING, "model": "other"}) == (404, "model")
    assert "/v1/chat/completions" in client.get("/openapi.json").json()["paths"]
    # A checkpoint without a chat template: 400 in one line, and no chat route in its schema.
    with serving(Path(tiny_checkpoint("llama"))) as plain:
        answer = plain.post("/v1/chat/completions", json={"messages": STOPPING})
        assert answer.status_code == 400
        message = answer.json()["error"]["message"]
        assert "no chat template" in message and "\n" not in message
        assert "/v1/chat/completions" not in plain.get("/openapi.json").json()["paths"]


def test_hone_chat_streams_replies_keeping_history_until_reset(chat_checkpoint, _cache):
    folder, reference = chat_checkpoint
    typed = folder.parent / "typed.txt"
    typed.write_text("Hello\nHi\n/reset\nHi\n")
    argv = ["chat", str(folder), "--temperature", "0", "--max-new-tokens", "5"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    logs = folder.parent / "logs"  # a fork of a server that imported torch (tests/forking.py)
    done = forking.run(argv, Path.cwd(), env, logs, timeout=120, stdin=typed)
    assert done.returncode == 0, done.stderr
    first = reference.reply([{"role": "user", "content": "Hello"}], 5)["text"]
    history = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Hi"},
    ]
    second = reference.reply(history, 5)["text"]
    again = reference.reply([{"role": "user", "content": "Hi"}], 5)["text"]
    assert done.stdout == f"{first}\n{second}\n{again}\n"
    assert "starts over" in done.stderr


def test_hone_chat_without_a_chat_template_is_one_line_and_exit_2(tiny_checkpoint, _cache):
    from hone.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["chat", str(tiny_checkpoint("llama"))])
    assert code == 2 and out.getvalue() == ""
    assert err.getvalue().count("\n") == 1 and "no chat template" in err.getvalue()
