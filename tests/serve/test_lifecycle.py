"""`hone serve` as a process a person leaves running: the API key, the bounded queue, the
per-request timeout, the SIGTERM drain, several workers, and refusals at start-up."""

from __future__ import annotations

import shutil
import signal
import socket
import threading

import httpx
from sklearn.datasets import load_digits

from hone.run_files import MODEL
from tests.conftest import run_hone

ROWS = load_digits().data[:4].tolist()


def half_sent_predict(server) -> socket.socket:
    """A predict request whose body never comes: in flight, so a queued request has company
    to wait for (the batcher waits only then), up to --max-wait-ms."""
    sock = socket.create_connection(server.url.removeprefix("http://").split(":"))
    sock.sendall(
        b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    server.wait_for_metric("hone_requests_in_flight", 1)
    return sock


def test_api_key_guards_every_route_but_health(start_server, serve_runs) -> None:
    server = start_server(serve_runs["mlp"], env={"HONE_API_KEY": "s3cret"})
    assert httpx.get(f"{server.url}/health").status_code == 200  # no key needed
    right = {"Authorization": "Bearer s3cret"}
    for headers in ({}, {"Authorization": "Bearer s3cres"}, {"Authorization": "s3cret"}):
        for path in ("/ready", "/metrics", "/v1/models", "/openapi.json"):
            r = httpx.get(f"{server.url}{path}", headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.json()["error"]["type"] == "authentication_error"
        refused = httpx.post(f"{server.url}/v1/predict", json={"inputs": ROWS}, headers=headers)
        assert refused.status_code == 401
    for _ in range(1200):  # ready, with the key
        if httpx.get(f"{server.url}/ready", headers=right).status_code == 200:
            break
        threading.Event().wait(0.1)
    answer = httpx.post(f"{server.url}/v1/predict", json={"inputs": ROWS}, headers=right)
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 4
    assert server.metric('hone_requests_total{route="/v1/predict",status="401"}', right) == 3


def test_queue_full_is_503_and_sigterm_drains_in_flight_requests(start_server, serve_runs) -> None:
    # One waiting request fills the queue: it waits up to 3 s for the half-sent one.
    server = start_server(
        serve_runs["mlp"], "--max-queue", "1", "--max-batch", "64", "--max-wait-ms", "3000"
    )
    server.wait_ready()
    company = half_sent_predict(server)
    answers: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{server.url}/v1/predict", json={"inputs": ROWS}, timeout=60)
        )
    )
    first.start()
    server.wait_for_metric("hone_queue_depth", 1)
    full = httpx.post(f"{server.url}/v1/predict", json={"inputs": ROWS})
    assert full.status_code == 503 and full.headers["retry-after"] == "1"
    assert "--max-queue" in full.json()["error"]["message"]

    server.proc.send_signal(signal.SIGTERM)  # the first request is still waiting
    # Draining: not ready, no new work, but the request in flight finishes.
    for _ in range(200):
        ready = httpx.get(f"{server.url}/ready")
        if ready.status_code == 503:
            break
        threading.Event().wait(0.02)
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    late = httpx.post(f"{server.url}/v1/predict", json={"inputs": ROWS})
    assert late.status_code == 503 and "shutting down" in late.json()["error"]["message"]
    first.join(60)
    company.close()  # its request ends (400: no body) and the drain can finish
    assert answers and answers[0].status_code == 200, answers
    assert len(answers[0].json()["predictions"]) == 4
    assert server.proc.wait(60) == 0, server.output


def test_a_slow_request_is_504(start_server, serve_runs) -> None:
    # With a half-sent request in flight, a row waits 5 s for it, past the 0.5 s timeout; a
    # full batch (4 rows) runs at once.
    server = start_server(
        serve_runs["mlp"], "--max-batch", "4", "--max-wait-ms", "5000", "--timeout", "0.5"
    )
    server.wait_ready()
    company = half_sent_predict(server)
    slow = httpx.post(f"{server.url}/v1/predict", json={"inputs": ROWS[:1]}, timeout=30)
    assert slow.status_code == 504 and "--timeout" in slow.json()["error"]["message"]
    fast = httpx.post(f"{server.url}/v1/predict", json={"inputs": ROWS}, timeout=30)
    assert fast.status_code == 200
    company.close()
    assert server.stop() == 0


def test_two_workers_share_the_port_and_the_metrics(start_server, serve_runs) -> None:
    server = start_server(serve_runs["mlp"], "--workers", "2")
    server.wait_ready()
    for _ in range(6):
        assert httpx.post(f"{server.url}/v1/predict", json={"inputs": ROWS}).status_code == 200
    server.wait_for_metric('hone_requests_total{route="/v1/predict",status="200"}', 6)
    assert server.stop() == 0, server.output


def test_start_up_refusals_are_one_line_exit_2(serve_runs, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(serve_runs["mlp"], broken)
    (broken / MODEL).write_bytes(b"not safetensors")
    failed = run_hone("serve", str(broken), "--port", "0")
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("hone: error:")
    assert "Traceback" not in failed.stderr
    exposed = run_hone(
        "serve", str(serve_runs["mlp"]), "--host", "0.0.0.0", env={"HONE_API_KEY": ""}
    )
    assert exposed.returncode == 2, exposed.stderr
    assert exposed.stderr.count("\n") == 1 and "--api-key" in exposed.stderr
    not_a_run = run_hone("serve", str(tmp_path))
    assert not_a_run.returncode == 2 and "not a hone run directory" in not_a_run.stderr
    no_onnx = run_hone("serve", str(serve_runs["mlp"]), "--backend", "onnx")
    assert no_onnx.returncode == 2 and "hone export" in no_onnx.stderr
