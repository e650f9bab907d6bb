"""Load on `hone serve` over loopback: requests/s, generated tokens/s and p50/p99 latency at
several concurrencies.

Models (--models): mlp-digits (one digit image per /v1/predict request), the char GPT
(gpt-shakespeare-char trained --gpt-steps steps) and a SmolLM2-135M-shaped Llama (random
weights, a 512-token context, written by transformers), both asked for completions of 64
tokens (/v1/completions, temperature 1, seed 1).
Servers, each started afresh for every row (no request left over from the last one):
  - mlp: `hone serve` (micro-batching), `--max-batch 1 --max-wait-ms 0`, and a plain FastAPI
    endpoint that calls `LoadedRun.predict` once per request;
  - language models: `hone serve` (continuous batching), `hone serve --batch-invariant`,
    and, with --before TREE, `hone serve` from another source tree (e.g. today's commit:
    `git archive HEAD | tar -x -C /tmp/before`).
The load comes from wrk (Debian's `wrk`: one C thread, one connection per concurrent client,
the same request body throughout), so client and server share the 2 cores; the ratios
between servers in one run are what to read. Bounded: --mlp-seconds / --gpt-seconds /
--smollm-seconds per row.

`--mismatch` instead measures, in one process, how often a completion's text at temperature 0
differs when 64 prompts run together from when each runs alone (default and batch-invariant
modes).

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
import threading
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
    def __init__(self, command: list[str], cwd: Path = ROOT) -> None:
        env = {**os.environ, "PYTHONPATH": str(cwd)}
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
        assert self.proc.stderr is not None
        self.url = ""
        for line in self.proc.stderr:
            if " on http://" in line:
                self.url = line.split(" on ", 1)[1].split()[0]
                break
        assert self.url, "the server did not start"
        # Read on, so that a server that logs never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stderr or ()], daemon=True).start()
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


MAX_TOKENS = 64


def _body(kind: str) -> dict[str, Any]:
    if kind == "mlp":
        from sklearn.datasets import load_digits

        return {"inputs": [load_digits().data[0].tolist()]}
    return {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "seed": 1}


def _train(workdir: Path, kinds: list[str], gpt_steps: int) -> dict[str, str]:
    hone = [sys.executable, "-m", "hone", "train"]
    runs = {k: str(workdir / k) for k in kinds}
    if "mlp" in kinds:
        subprocess.run([*hone, "mlp-digits", "--run-dir", runs["mlp"], *[f"--{o}" for o in QUIET]], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
    if "gpt" in kinds:
        subprocess.run(
            [*hone, "gpt-shakespeare-char", "--run-dir", runs["gpt"], f"--train.max_steps={gpt_steps}",
             "--train.max_seconds=0", "--train.eval_every=0", "--train.sample_tokens=0",
             *[f"--{o}" for o in QUIET]],
            check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    if "smollm" in kinds:
        smollm_checkpoint(Path(runs["smollm"]))
    return runs


# SmolLM2-135M's sizes (bench/pretrained.py), with a 512-token context: each sequence's
# key/value slot then takes 24 MB in fp32, 64 of them 1.5 GB.
SMOLLM2_135M = {
    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
    "max_position_embeddings": 512, "rope_theta": 100000.0, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True, "bos_token_id": 0, "eos_token_id": 1,
}  # fmt: skip


def smollm_checkpoint(folder: Path) -> None:
    """A random SmolLM2-135M-shaped Llama and a small byte-level BPE, as transformers saves them."""
    import tokenizers
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**SMOLLM2_135M))
    model.save_pretrained(folder)
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=2000, special_tokens=["<s>", "</s>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    text = (ROOT / "README.md").read_text()
    bpe.train_from_iterator(text.splitlines(), trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")  # fmt: skip
    fast.save_pretrained(folder)


def _servers(kind: str, run: str, before: str | None) -> dict[str, tuple[list[str], Path]]:
    """name -> (command, working directory) of each server to load for `kind`."""
    serve = [sys.executable, "-m", "hone", "serve", "--port", "0", "--log-level", "warning"]
    if kind == "mlp":
        return {
            "hone serve": ([*serve, run], ROOT),
            "hone serve, unbatched": ([*serve, run, "--max-batch", "1", "--max-wait-ms", "0"], ROOT),
            "plain FastAPI": ([sys.executable, __file__, "--plain-server", run, "--port", str(_free_port())], ROOT),
        }  # fmt: skip
    # 64 slots for 64 clients (the SmolLM-shaped model's default budget, its weights' size,
    # holds 22 of its 512-token slots).
    slots = ["--kv-cache-mb", "1600"] if kind == "smollm" else []
    servers = {}
    if before:
        servers["before (one at a time)"] = ([*serve, run], Path(before))
    servers["hone serve"] = ([*serve, run, *slots], ROOT)
    servers["hone serve --batch-invariant"] = ([*serve, run, *slots, "--batch-invariant"], ROOT)
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt,smollm", help="of mlp, gpt, smollm")
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--mlp-seconds", type=float, default=8.0, help="per row")
    parser.add_argument("--gpt-seconds", type=float, default=10.0, help="per row")
    parser.add_argument("--smollm-seconds", type=float, default=30.0, help="per row")
    parser.add_argument("--gpt-steps", type=int, default=100)
    parser.add_argument("--before", help="a source tree whose `hone serve` to load too")
    parser.add_argument("--mismatch", action="store_true", help="measure text mismatches")
    parser.add_argument("--mismatch-prompts", default="gpt=64,smollm=16", help="per model")
    parser.add_argument("--plain-server", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_server:
        plain_server(args.plain_server, args.port)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    kinds = args.models.split(",")
    args.mismatch_prompts = {
        k: int(n) for k, n in (item.split("=") for item in args.mismatch_prompts.split(","))
    }
    levels = [int(c) for c in args.concurrency.split(",")]
    seconds = {"mlp": args.mlp_seconds, "gpt": args.gpt_seconds, "smollm": args.smollm_seconds}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("HONE_CACHE_DIR", str(Path(tmp) / "cache"))
        with console.status(f"preparing {', '.join(kinds)}"):
            runs = _train(Path(tmp), kinds, args.gpt_steps)
        if args.mismatch:
            for kind in kinds:
                for exact in (False, True):
                    result = mismatches(runs[kind], exact, console, args.mismatch_prompts[kind])
                    console.print({"model": kind, **result})
            return
        for kind in kinds:
            route = "/v1/predict" if kind == "mlp" else "/v1/completions"
            for name, (command, cwd) in _servers(kind, runs[kind], args.before).items():
                for c in levels:
                    with console.status(f"{kind}: {name}, concurrency {c}"):
                        server = Started(command, cwd)  # afresh: nothing left from the last row
                        try:
                            httpx.post(server.url + route, json=_body(kind), timeout=120)  # warm-up
                            result = _wrk(server.url + route, _body(kind), c, seconds[kind])
                        finally:
                            server.stop()
                    if kind != "mlp":
                        result["tokens_per_second"] = result["requests_per_second"] * MAX_TOKENS
                    rows.append({"model": kind, "server": name, "concurrency": c, **result})
                    console.log(rows[-1])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve_load.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = Table(title="hone serve under load (loopback, this machine)")
    for col in ("model", "server", "concurrency", "req/s", "tokens/s", "p50 ms", "p99 ms", "errors"):  # fmt: skip
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["model"], r["server"], str(r["concurrency"]), f"{r['requests_per_second']:.1f}",
            f"{r.get('tokens_per_second', 0):.0f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}",
            str(r["errors"]),
        )  # fmt: skip
    Console().print(table)
    _plot(rows, levels)


def mismatches(run: str, exact: bool, console: Any, num_prompts: int = 64) -> dict[str, Any]:
    """How many of `num_prompts` greedy completions differ between running alone and running
    all at once, through the scheduler (in this process, 1 torch thread, as many slots as
    prompts); and how many of the first 8 lone ones differ from `hone sample`'s."""
    import asyncio

    import torch

    from hone.engine.inference import LoadedRun
    from hone.serve.generation import BatchedGeneration
    from hone.serve.scheduler import Scheduler, SchedulerConfig

    torch.set_num_threads(1)
    loaded = LoadedRun.load(run, "cpu")
    words = [w for w in (ROOT / "README.md").read_text().split() if w.isascii() and w.isalpha()]
    prompts = [" ".join(words[i * 3 : i * 3 + 1 + i % 5]) for i in range(num_prompts)]
    config = SchedulerConfig(kv_cache_mb=4000, max_seqs=num_prompts, batch_invariant=exact)
    scheduler = Scheduler(loaded, config)
    scheduler.start()

    async def one(prompt: str) -> str:
        seq = scheduler.submit(prompt, MAX_TOKENS, 0.0, None, None, 0, [])
        return await BatchedGeneration(scheduler, seq).text()

    async def measure() -> tuple[list[str], list[str], float, float]:
        started = time.perf_counter()
        alone = [await one(p) for p in prompts]
        alone_seconds = time.perf_counter() - started
        started = time.perf_counter()
        together = await asyncio.gather(*[one(p) for p in prompts])
        return alone, list(together), alone_seconds, time.perf_counter() - started

    with console.status(f"mismatches: {run}, batch_invariant={exact}"):
        alone, together, alone_seconds, together_seconds = asyncio.run(measure())
        sampled = [loaded.sample(p, MAX_TOKENS, 0.0) for p in prompts[:8]]
    scheduler.stop()
    return {
        "batch_invariant": exact,
        "prompts": num_prompts,
        "differ_together_vs_alone": sum(a != t for a, t in zip(alone, together, strict=True)),
        "differ_alone_vs_hone_sample": sum(a != s for a, s in zip(alone, sampled, strict=False)),
        "of_hone_sample": len(sampled),
        "alone_seconds": round(alone_seconds, 2),
        "together_seconds": round(together_seconds, 2),
    }


def _plot(rows: list[dict[str, Any]], levels: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"mlp": "mlp-digits predict", "gpt": "char GPT, 64 tokens", "smollm": "SmolLM2-135M-shaped, 64 tokens"}  # fmt: skip
    kinds = [k for k in titles if any(r["model"] == k for r in rows)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        title = titles[kind]
        for server in dict.fromkeys(r["server"] for r in rows if r["model"] == kind):
            ours = [r for r in rows if r["model"] == kind and r["server"] == server]
            ys = [r.get("tokens_per_second", r["requests_per_second"]) for r in ours]
            ax.plot([r["concurrency"] for r in ours], ys, marker="o", label=server)
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("requests / s" if kind == "mlp" else "generated tokens / s")
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
