"""What a `hone serve` process is told: where to listen, who may call it, and its limits.

Every limit has a default that a person can leave running on a machine: a bounded queue, a
bounded body, bounded generations. Only `check()` decides what is refused at start-up, so the
command line and Python users (`hone.serve.serve(ServeSettings(...))`) get the same answers.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from hone.errors import ConfigError

API_KEY_ENV = "HONE_API_KEY"
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": addresses no other machine can reach."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@dataclass
class ServeSettings:
    """One server's configuration; `check()` validates it."""

    run: str
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    insecure: bool = False  # bind beyond loopback without a key (warned)
    workers: int = 1
    backend: str = "auto"  # auto, torch or onnx
    device: str = "auto"
    model_name: str = ""  # the id in /v1/models; default the run folder's name
    max_batch: int = 32  # rows of one predict batch
    max_wait_ms: float = 5.0  # how long a predict request waits for others to batch with
    max_queue: int = 256  # requests waiting for the model; more are answered 503
    max_body_bytes: int = 1_000_000
    max_tokens: int = 1024  # the largest `max_tokens` a completion may ask for
    max_prompt_chars: int = 8192
    max_streams: int = 256  # concurrent streamed completions; more are answered 429
    # Completions (hone.serve.scheduler): decoded together, each with a slot of the model's
    # context in the key/value cache; beyond the slots they wait in the queue (--max-queue).
    kv_cache_mb: float = 0.0  # the slots' memory; 0: the weights' size, at least 64 MiB
    max_seqs: int = 64  # sequences decoded together at most
    prefill_chunk: int = 128  # prompt tokens fed per step, so a long one stalls no one
    batch_invariant: bool = False  # every step at one shape: a text never depends on others
    timeout_s: float = 60.0  # per request; 504 after it
    grace_s: float = 30.0  # SIGTERM: how long in-flight requests may take to finish
    threads: int = 0  # torch threads of each worker; 0 keeps torch's default
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None

    def check(self) -> None:
        """Refuse settings that are unsafe or cannot work, with the flag that fixes them."""
        if not is_loopback(self.host) and not self.api_key and not self.insecure:
            raise ConfigError(
                f"binding {self.host} exposes the model to other machines; set --api-key KEY "
                f"(or {API_KEY_ENV}), or pass --insecure to serve without one"
            )
        positive = {
            "--workers": self.workers,
            "--max-batch": self.max_batch,
            "--max-queue": self.max_queue,
            "--max-body-bytes": self.max_body_bytes,
            "--max-tokens": self.max_tokens,
            "--max-prompt-chars": self.max_prompt_chars,
            "--max-streams": self.max_streams,
            "--max-seqs": self.max_seqs,
            "--prefill-chunk": self.prefill_chunk,
        }
        for flag, value in positive.items():
            if value < 1:
                raise ConfigError(f"{flag} must be at least 1, got {value}")
        if not 0 <= self.port < 65536:
            raise ConfigError(
                f"--port must be between 0 (any free port) and 65535, got {self.port}"
            )
        for flag, seconds in (
            ("--max-wait-ms", self.max_wait_ms),
            ("--timeout", self.timeout_s),
            ("--grace", self.grace_s),
            ("--kv-cache-mb", self.kv_cache_mb),
        ):
            if seconds < 0:
                raise ConfigError(f"{flag} must be at least 0, got {seconds}")
        if self.backend not in ("auto", "torch", "onnx"):
            raise ConfigError(f"--backend must be auto, torch or onnx, got {self.backend!r}")
