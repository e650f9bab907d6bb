"""`hone serve RUN`: a trained model behind an HTTP API (hone/serve)."""

from __future__ import annotations

import argparse
from typing import Any

from hone.serve.settings import API_KEY_ENV, ServeSettings

EXAMPLES = """examples:
  hone serve runs/mlp-digits-20261129T1200Z
  curl -s localhost:8000/v1/predict -H 'content-type: application/json' -d '{"inputs": [[0, 1, …]]}'
  HONE_API_KEY=secret hone serve RUN --host 0.0.0.0 --workers 2
"""


def add_parser(sub: Any) -> None:
    defaults = ServeSettings(run="")
    p = sub.add_parser(
        "serve",
        help="serve a run over HTTP: predictions, OpenAI-style completions, metrics",
        description="Serve a run directory, an exported bundle or a compressed run. "
        "Binds 127.0.0.1 unless told otherwise; any other address needs an API key.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "run_dir",
        help="a run directory, RUN/bundle, a compressed run, or a Hugging Face checkpoint "
        "(a folder, or hf:ORG/NAME)",
    )
    p.add_argument("--host", default=defaults.host, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=defaults.port, help="port (0: any free one)")
    p.add_argument(
        "--api-key", default=None, help=f"require `Authorization: Bearer KEY` (or {API_KEY_ENV})"
    )
    p.add_argument(
        "--insecure", action="store_true", help="bind beyond loopback without a key (warned)"
    )
    p.add_argument("--workers", type=int, default=defaults.workers, help="server processes")
    p.add_argument(
        "--backend",
        default=defaults.backend,
        choices=["auto", "torch", "onnx"],
        help="what runs the model: torch, onnx (RUN/model.onnx from `hone export`, on ONNX "
        "Runtime) or auto, the run's own (onnx for an int8 ONNX Runtime run, else torch)",
    )
    p.add_argument("--device", default=defaults.device)
    p.add_argument("--model-name", default="", help="the id in /v1/models (default: folder name)")
    p.add_argument(
        "--max-batch", type=int, default=defaults.max_batch, help="rows per predict batch"
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=defaults.max_wait_ms,
        help="how long a predict request waits to be batched with others",
    )
    p.add_argument(
        "--max-queue", type=int, default=defaults.max_queue, help="waiting requests before 503"
    )
    p.add_argument(
        "--max-body-bytes", type=int, default=defaults.max_body_bytes, help="larger bodies: 413"
    )
    p.add_argument(
        "--max-tokens", type=int, default=defaults.max_tokens, help="largest max_tokens allowed"
    )
    p.add_argument(
        "--max-prompt-chars",
        type=int,
        default=defaults.max_prompt_chars,
        help="longest prompt allowed",
    )
    p.add_argument(
        "--max-streams", type=int, default=defaults.max_streams, help="concurrent streams (429)"
    )
    p.add_argument(
        "--kv-cache-mb",
        type=float,
        default=defaults.kv_cache_mb,
        help="memory for the key/value slots of running completions (0: the weights' size, "
        "at least 64 MiB); more requests wait in the queue",
    )
    p.add_argument(
        "--max-seqs",
        type=int,
        default=defaults.max_seqs,
        help="completions decoded together in one batch at most",
    )
    p.add_argument(
        "--prefill-chunk",
        type=int,
        default=defaults.prefill_chunk,
        help="prompt tokens fed per decoding step (a long prompt stalls the others no more)",
    )
    p.add_argument(
        "--batch-invariant",
        action="store_true",
        help="run every decoding step at one shape, so that a completion's text never "
        "depends on the others running (slower when few run)",
    )
    p.add_argument(
        "--timeout", type=float, default=defaults.timeout_s, help="seconds per request (504)"
    )
    p.add_argument(
        "--grace", type=float, default=defaults.grace_s, help="SIGTERM: seconds to finish requests"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: auto)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(run=serve)


def serve(args: argparse.Namespace) -> int:
    from hone.serve import serve as run_server

    settings = ServeSettings(
        run=args.run_dir,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        insecure=args.insecure,
        workers=args.workers,
        backend=args.backend,
        device=args.device,
        model_name=args.model_name,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        max_tokens=args.max_tokens,
        max_prompt_chars=args.max_prompt_chars,
        max_streams=args.max_streams,
        kv_cache_mb=args.kv_cache_mb,
        max_seqs=args.max_seqs,
        prefill_chunk=args.prefill_chunk,
        batch_invariant=args.batch_invariant,
        timeout_s=args.timeout,
        grace_s=args.grace,
        threads=args.threads,
        log_level=args.log_level,
    )
    return run_server(settings)
