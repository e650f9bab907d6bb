"""Load on `hone serve` over loopback: requests/s and p50/p99 latency at several concurrencies.

For mlp-digits (one digit image per request) and the char GPT (completions of 64 tokens),
against three servers started one after the other on this machine:
  - `hone serve` as shipped (micro-batching: --max-batch 32, --max-wait-ms 5),
  - `hone serve --max-batch 1 --max-wait-ms 0` (every request its own model call),
  - a plain FastAPI endpoint that calls `LoadedRun.predict` / `LoadedRun.sample` once per
    request (a `def` route: FastAPI runs it in its thread pool, as most hand-written
    endpoints do).
The load comes from wrk (Debian's `wrk`: one C thread, one connection per concurrent client,
the same request body throughout), so client and server share the 2 cores; the ratios
between servers are what to read. Bounded: --mlp-seconds / --gpt-seconds per row.

Run: `apt-get install wrk`, then `.venv/bin/python bench/serve_load.py` (writes
bench/results/serve_load.json and .png)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
QUIET = ["log.tensorboard=false", "log.progress=off", "train.checkpoint_every=0"]
PROMPT = "ROMEO:"


# ---------------------------------------------------------------- the plain endpoint
def plain_server(run: str, port: int) -> None:
    """The baseline: FastAPI, one model call per request, no batching, no limits."""
    import torch
    import uvicorn
    from fastapi import FastAPI

    from hone.engine.inference import LoadedRun

    loaded = LoadedRun.load(run)
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/predict")
    def predict(body: dict[str, Any]) -> dict[str, Any]:
        return loaded.predict(torch.tensor(body["inputs"], dtype=torch.float32))

    @app.post("/v1/completions")
    def completions(body: dict[str, Any]) -> dict[str, Any]:
        text = loaded.sample(body["prompt"], body["max_tokens"], seed=body.get("seed", 0))
        return {"choices": [{"text": text}]}

    print(f"plain server on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------- servers and load
class Started:
    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stderr is not None
        self.url = ""
        for line in self.proc.stderr:
            if " on http://" in line:
                self.url = line.split(" on ", 1)[1].split()[0]
                break
        assert self.url, "the server did not start"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server did not become ready")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _wrk(url: str, body: dict[str, Any], concurrency: int, seconds: float) -> dict[str, Any]:
    """wrk (C, one thread) posting `body` over `concurrency` connections for `seconds`."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "--timeout", "60s",
         "-s", script.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    os.unlink(script.name)

    def ms(text: str) -> float:
        value, unit = float(text[:-2] if text.endswith(("ms", "us")) else text[:-1]), text[-2:]
        return value * {"us": 1e-3, "ms": 1.0}.get(unit, 1000.0)

    fields = {line.split()[0]: line.split()[1] for line in out.splitlines() if "%" in line and len(line.split()) == 2}  # fmt: skip
    errors = sum(
        int(n)
        for line in out.splitlines()
        if line.strip().startswith(("Non-2xx", "Socket errors"))
        for n in re.findall(r"\d+", line.split(":", 1)[1])
    )
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "requests": requests,
        "errors": errors,
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": ms(fields["50%"]),
        "p99_ms": ms(fields["99%"]),
    }


def _body(kind: str) -> dict[str, Any]:
    if kind == "mlp":
        from sklearn.datasets import load_digits

        return {"inputs": [load_digits().data[0].tolist()]}
    return {"prompt": PROMPT, "max_tokens": 64, "seed": 1}


def _train(workdir: Path, gpt_steps: int) -> dict[str, str]:
    hone = [sys.executable, "-m", "hone", "train"]
    runs = {"mlp": str(workdir / "mlp"), "gpt": str(workdir / "gpt")}
    subprocess.run([*hone, "mlp-digits", "--run-dir", runs["mlp"], *[f"--{o}" for o in QUIET]], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
    subprocess.run(
        [*hone, "gpt-shakespeare-char", "--run-dir", runs["gpt"], f"--train.max_steps={gpt_steps}",
         "--train.max_seconds=0", "--train.eval_every=0", "--train.sample_tokens=0",
         *[f"--{o}" for o in QUIET]],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--mlp-seconds", type=float, default=8.0, help="per row")
    parser.add_argument("--gpt-seconds", type=float, default=15.0, help="per row")
    parser.add_argument("--gpt-steps", type=int, default=100)
    parser.add_argument("--plain-server", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_server:
        plain_server(args.plain_server, args.port)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    levels = [int(c) for c in args.concurrency.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        with console.status("training mlp-digits and the char GPT"):
            runs = _train(Path(tmp), args.gpt_steps)
        serve = [sys.executable, "-m", "hone", "serve", "--port", "0", "--log-level", "warning"]
        for kind, route, seconds in (
            ("mlp", "/v1/predict", args.mlp_seconds),
            ("gpt", "/v1/completions", args.gpt_seconds),
        ):
            servers = {
                "hone serve": [*serve, runs[kind]],
                "hone serve, unbatched": [*serve, runs[kind], "--max-batch", "1", "--max-wait-ms", "0"],
                "plain FastAPI": [sys.executable, __file__, "--plain-server", runs[kind], "--port", str(_free_port())],
            }  # fmt: skip
            if kind == "gpt":  # generation is never batched: the two hone rows would be one
                del servers["hone serve, unbatched"]
            for name, command in servers.items():
                server = Started(command)
                try:
                    for c in levels:
                        with console.status(f"{kind}: {name}, concurrency {c}"):
                            _wrk(server.url + route, _body(kind), c, 1)  # warm-up
                            result = _wrk(server.url + route, _body(kind), c, seconds)
                        rows.append({"model": kind, "server": name, "concurrency": c, **result})
                        console.log(rows[-1])
                finally:
                    server.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve_load.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = Table(title="hone serve under load (loopback, this machine)")
    for col in ("model", "server", "concurrency", "req/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["model"], r["server"], str(r["concurrency"]), f"{r['requests_per_second']:.0f}",
            f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", str(r["errors"]),
        )  # fmt: skip
    Console().print(table)
    _plot(rows, levels)


def _plot(rows: list[dict[str, Any]], levels: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind, title in zip(axes, ("mlp", "gpt"), ("mlp-digits predict", "char GPT, 64 tokens"), strict=True):  # fmt: skip
        for server in dict.fromkeys(r["server"] for r in rows if r["model"] == kind):
            ours = [r for r in rows if r["model"] == kind and r["server"] == server]
            ax.plot([r["concurrency"] for r in ours], [r["requests_per_second"] for r in ours], marker="o", label=server)  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("requests / s")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "serve_load.png", dpi=100)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
