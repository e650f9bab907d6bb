"""`hone serve` on a language model: OpenAI-style completions that equal `hone sample` for
the same seed, streamed or not; the limits; the openai client; the schema (schemathesis)."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from tests.conftest import run_hone
from tests.serve.test_predict import _schemathesis

SERVE = (
    "gpt",
    ["--max-streams", "1", "--max-tokens", "100000", "--max-prompt-chars", "50",
     "--max-body-bytes", "4000"],
)  # fmt: skip


def _events(response: httpx.Response) -> list[str]:
    """The data of each server-sent event, [DONE] included."""
    return [line[len("data: ") :] for line in response.text.split("\n\n") if line]


def test_completion_equals_hone_sample_streamed_or_not(ready_server, serve_runs) -> None:
    ask = {"prompt": "ROMEO:", "max_tokens": 60, "seed": 7, "temperature": 0.9, "top_k": 20}
    whole = httpx.post(f"{ready_server.url}/v1/completions", json=ask, timeout=60)
    assert whole.status_code == 200, whole.text
    body = whole.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 60, "total_tokens": 66}
    sampled = run_hone(
        "sample", str(serve_runs["gpt"]), "--prompt", "ROMEO:", "--max-new-tokens", "60",
        "--seed", "7", "--temperature", "0.9", "--top-k", "20",
    )  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout == "ROMEO:" + choice["text"] + "\n"

    streamed = httpx.post(
        f"{ready_server.url}/v1/completions", json={**ask, "stream": True}, timeout=60
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = _events(streamed)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == choice["text"]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert all(c["object"] == "text_completion" for c in chunks)


def test_stop_strings_end_the_text_before_them(ready_server) -> None:
    ask = {"prompt": "ROMEO:", "max_tokens": 200, "seed": 3}
    free = httpx.post(f"{ready_server.url}/v1/completions", json=ask).json()["choices"][0]["text"]
    stop = free[10:12]  # two characters that the unstopped text holds
    cut = free[: free.index(stop)]
    stopped = httpx.post(f"{ready_server.url}/v1/completions", json={**ask, "stop": [stop]})
    assert stopped.json()["choices"][0] == {
        "text": cut, "index": 0, "logprobs": None, "finish_reason": "stop"
    }  # fmt: skip
    streamed = httpx.post(
        f"{ready_server.url}/v1/completions", json={**ask, "stop": stop, "stream": True}
    )
    chunks = [json.loads(e) for e in _events(streamed)[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == cut


def test_openai_client_talks_to_it(ready_server) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{ready_server.url}/v1", api_key="unused")
    model = client.models.list().data[0].id
    answer = client.completions.create(model=model, prompt="To be", max_tokens=20, seed=1)
    streamed = client.completions.create(
        model=model, prompt="To be", max_tokens=20, seed=1, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == answer.choices[0].text
    assert answer.usage.completion_tokens == 20


def test_limits_answer_4xx_naming_the_field(ready_server) -> None:
    url = f"{ready_server.url}/v1/completions"

    def error(body: dict) -> tuple[int, str | None]:
        r = httpx.post(url, json=body)
        return r.status_code, r.json()["error"]["param"]

    assert error({"prompt": "x" * 51}) == (422, "prompt")
    assert error({"prompt": "a", "max_tokens": 100001}) == (422, "max_tokens")
    assert error({"prompt": "a", "temperature": "hot"}) == (422, "temperature")
    assert error({"prompt": "a", "top_p": 0}) == (422, "top_p")
    assert error({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}) == (422, "stop")
    assert error({"prompt": "a", "model": "other"}) == (404, "model")
    assert error({"max_tokens": 3}) == (422, "prompt")
    big = httpx.post(
        url, content=b"{" + b" " * 5000 + b"}", headers={"content-type": "application/json"}
    )
    assert big.status_code == 413


def test_a_second_stream_is_429_until_the_first_goes_away(ready_server) -> None:
    url = f"{ready_server.url}/v1/completions"
    long = {"prompt": "ROMEO:", "max_tokens": 100000, "stream": True, "seed": 1}
    with httpx.Client(timeout=60) as client, client.stream("POST", url, json=long) as first:
        assert first.status_code == 200
        lines = first.iter_lines()  # kept: a dropped iterator would close the response
        assert next(lines).startswith("data: ")  # the first event: the stream is running
        second = httpx.post(url, json={**long, "max_tokens": 5})
        assert second.status_code == 429
        assert second.headers["retry-after"]
        assert "--max-streams" in second.json()["error"]["message"]
        # Not streamed, a completion is not limited by the streams.
        assert httpx.post(url, json={"prompt": "A", "max_tokens": 3}).status_code == 200
    # The client hung up: the server stops generating and frees the stream.
    ready_server.wait_for_metric("hone_active_streams", 0)
    again = httpx.post(url, json={**long, "max_tokens": 5})
    assert again.status_code == 200 and _events(again)[-1] == "[DONE]"


def test_onnx_backend_writes_the_same_greedy_text(
    start_server, serve_runs, ready_server, tmp_path
) -> None:
    run = tmp_path / "gpt"
    subprocess.run(["cp", "-r", str(serve_runs["gpt"]), str(run)], check=True)
    from hone.export import export_onnx

    export_onnx(run)
    server = start_server(run, "--backend", "onnx")
    server.wait_ready()
    ask = {"prompt": "KING:", "max_tokens": 40, "temperature": 0}
    onnx = httpx.post(f"{server.url}/v1/completions", json=ask).json()["choices"][0]["text"]
    eager = httpx.post(f"{ready_server.url}/v1/completions", json=ask).json()["choices"][0]["text"]
    assert onnx == eager and len(onnx) == 40


def test_schemathesis_finds_no_failure(ready_server, tmp_path) -> None:
    _schemathesis(ready_server.url, tmp_path)
