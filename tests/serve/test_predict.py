"""`hone serve` on a classifier: /v1/predict answers as `hone predict` does, one request or
many at once (micro-batched), on PyTorch and on ONNX Runtime; the schema holds (schemathesis)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from sklearn.datasets import load_digits

from hone.engine.predict import predict_csv
from hone.run_files import ONNX

# Batches of up to 16 rows, waiting up to 50 ms for company.
SERVE = ("mlp", ["--max-batch", "16", "--max-wait-ms", "50"])


def _digits(n: int, offset: int = 0) -> list[list[float]]:
    return load_digits().data[offset : offset + n].tolist()


def _reference(run: Path, rows: list[list[float]], tmp_path: Path) -> list[dict[str, str]]:
    """`hone predict`'s CSV for `rows`: predictions and p_<class> columns."""
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    with open(source, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"x{i}" for i in range(len(rows[0]))])
        writer.writerows(rows)
    predict_csv(run, source, out)
    with open(out, newline="") as f:
        return list(csv.DictReader(f))


def _check(answer: dict, reference: list[dict[str, str]]) -> None:
    assert [str(p) for p in answer["predictions"]] == [r["prediction"] for r in reference]
    expected = [[float(r[f"p_{k}"]) for k in range(10)] for r in reference]
    # The CSV keeps 6 significant digits.
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-5, atol=1e-6)


def test_predict_equals_hone_predict_alone_and_batched(ready_server, serve_runs, tmp_path) -> None:
    rows = _digits(40)
    reference = _reference(serve_runs["mlp"], rows, tmp_path)
    whole = httpx.post(f"{ready_server.url}/v1/predict", json={"inputs": rows})
    assert whole.status_code == 200, whole.text
    _check(whole.json(), reference)
    # 40 concurrent requests of one row each (as 8x8 images): each gets its own row's answer.
    images = [np.reshape(r, (8, 8)).tolist() for r in rows]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda img: httpx.post(f"{ready_server.url}/v1/predict", json={"inputs": [img]}),
                images,
            )
        )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    merged = {
        "predictions": [a.json()["predictions"][0] for a in answers],
        "probabilities": [a.json()["probabilities"][0] for a in answers],
    }
    _check(merged, reference)
    # Every row went through some batch; none larger than --max-batch but the request of 40
    # rows, which runs alone.
    assert ready_server.metric("hone_batch_size_sum") >= 80
    larger = ready_server.metric("hone_batch_size_count") - ready_server.metric(
        'hone_batch_size_bucket{le="16.0"}'
    )
    assert larger == 1


def test_bad_inputs_are_4xx_naming_the_field(ready_server) -> None:
    url = f"{ready_server.url}/v1/predict"
    short = httpx.post(url, json={"inputs": [[1.0, 2.0]]})
    assert short.status_code == 422 and short.json()["error"]["param"].startswith("inputs")
    text = httpx.post(url, json={"inputs": [["a"] * 64]})
    assert text.status_code == 422 and text.json()["error"]["param"].startswith("inputs")
    broken = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]["message"]
    nan = httpx.post(
        url, content=b'{"inputs": [[NaN]]}', headers={"content-type": "application/json"}
    )
    assert nan.status_code in (400, 422)
    assert httpx.get(f"{ready_server.url}/v1/models").json()["data"][0]["task"] == "classification"
    assert httpx.get(f"{ready_server.url}/health").json() == {"status": "alive"}


def test_body_over_the_limit_is_413(start_server, serve_runs) -> None:
    server = start_server(serve_runs["mlp"], "--max-body-bytes", "2000")
    server.wait_ready()
    big = {"inputs": _digits(20)}
    declared = httpx.post(f"{server.url}/v1/predict", json=big)
    assert declared.status_code == 413 and "--max-body-bytes" in declared.json()["error"]["message"]

    def chunks():  # no Content-Length: counted as it arrives
        body = json.dumps(big).encode()
        for i in range(0, len(body), 500):
            yield body[i : i + 500]

    chunked = httpx.post(
        f"{server.url}/v1/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413
    assert httpx.post(f"{server.url}/v1/predict", json={"inputs": _digits(2)}).status_code == 200


def test_onnx_backend_answers_as_pytorch(start_server, serve_runs, ready_server, tmp_path) -> None:
    run = tmp_path / "mlp"
    subprocess.run(["cp", "-r", str(serve_runs["mlp"]), str(run)], check=True)
    from hone.export import export_onnx

    export_onnx(run)
    assert (run / ONNX).is_file()
    server = start_server(run, "--backend", "onnx")
    server.wait_ready()
    assert httpx.get(f"{server.url}/v1/models").json()["data"][0]["backend"] == "onnxruntime"
    rows = {"inputs": _digits(25, offset=100)}
    onnx = httpx.post(f"{server.url}/v1/predict", json=rows).json()
    torch_answer = httpx.post(f"{ready_server.url}/v1/predict", json=rows).json()
    assert onnx["predictions"] == torch_answer["predictions"]
    np.testing.assert_allclose(onnx["probabilities"], torch_answer["probabilities"], atol=1e-5)


def test_schemathesis_finds_no_failure(ready_server, tmp_path) -> None:
    """Every documented route, generated valid and invalid requests: no 5xx, every response
    as the schema says (400/422 bodies included)."""
    _schemathesis(ready_server.url, tmp_path)


def _schemathesis(url: str, tmp_path: Path, *extra: str) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/openapi.json",
         "--checks", "all", "--max-examples", "25", "--workers", "1", "--seed", "1",
         "--generation-database", "none", "--no-color", *extra],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
