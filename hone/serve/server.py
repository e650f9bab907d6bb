"""Running the app: uvicorn on a socket hone binds itself, a graceful drain on SIGTERM, and
`--workers N` processes sharing that socket.

uvicorn's own SIGTERM handling stops listening at once and re-raises the signal after its
shutdown (the process then ends by the signal, not with 0). A load balancer wants the
opposite order: /ready turns 503, requests in flight finish, then the process exits 0. That
order is `DrainingServer.handle_exit`. uvicorn's multi-process supervisor builds plain
`uvicorn.Server`s, so `--workers` has a small supervisor of its own here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from types import FrameType
from typing import Any

import uvicorn

from hone.errors import ConfigError, ExitCode
from hone.serve.settings import ServeSettings

log = logging.getLogger("hone.serve")


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT drains and whose second one stops now."""

    def __init__(self, config: uvicorn.Config, settings: ServeSettings) -> None:
        super().__init__(config)
        self.settings = settings
        self.loop: asyncio.AbstractEventLoop | None = None
        self.draining = False
        self.fatal: str | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not appended to uvicorn's captured signals: they would be re-raised at the end.
        if self.draining or self.loop is None:
            self.force_exit = self.draining
            self.should_exit = True
            return
        self.draining = True
        self.loop.call_soon_threadsafe(lambda: self.loop and self.loop.create_task(self._drain()))

    async def _drain(self) -> None:
        gate: Any = self.config.app  # hone.serve.gate.Gate
        state = gate.state
        state.status = "draining"
        log.info(
            "hone serve: draining %d request(s), up to %g s", state.in_flight, self.settings.grace_s
        )
        try:
            await asyncio.wait_for(state.idle.wait(), self.settings.grace_s)
        except TimeoutError:
            log.warning(
                "hone serve: %d request(s) still running after --grace; stopping", state.in_flight
            )
        self.should_exit = True

    def stop_fatal(self, message: str) -> None:
        """Loading failed: stop with a user error's exit code."""
        self.fatal = message
        self.should_exit = True


def quiet_threads() -> None:
    """OpenMP threads that sleep between model calls instead of spinning.

    A server calls the model in short bursts; torch's OpenMP threads spin for a while after
    each one, and on a busy 2-core machine that spinning took the cores from the event loop:
    a 64-token completion took 2-3 s instead of 0.2-0.4 s (BENCHMARKS.md). OpenMP reads the
    policy once, when torch loads, so this must run first; a user's own setting wins.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def bind(settings: ServeSettings) -> socket.socket:
    """The listening socket (port 0 picks a free one); a ConfigError when it is taken."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {settings.host}:{settings.port} ({e.strerror}); choose another --port "
            "or --host"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(settings: ServeSettings) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (0 after a graceful drain)."""
    settings.check()
    quiet_threads()
    from hone.serve.model import ServedModel

    ServedModel(settings).close()  # fail fast, before binding, on a folder that is no run
    sock = bind(settings)
    print(
        f"hone serve: {settings.run} on {url(sock)} (workers {settings.workers}); "
        "GET /ready answers 200 once the model is loaded",
        file=sys.stderr,
        flush=True,
    )
    if settings.insecure and not settings.api_key:
        print(
            f"hone serve: warning: --insecure: anyone who can reach {settings.host} may call the model",
            file=sys.stderr,
            flush=True,
        )
    try:
        if settings.workers == 1:
            return run_worker(settings, sock)
        return _supervise(settings, sock)
    finally:
        sock.close()


def run_worker(settings: ServeSettings, sock: socket.socket) -> int:
    """One server process on the bound socket."""
    from hone.serve.app import create_app

    holder: dict[str, DrainingServer] = {}
    app = create_app(settings, on_fatal=lambda message: holder["server"].stop_fatal(message))
    config = uvicorn.Config(
        app,
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(math.ceil(settings.grace_s), 1),
        lifespan="on",
    )
    server = holder["server"] = DrainingServer(config, settings)
    server.run(sockets=[sock])
    if server.fatal is not None:
        print(f"hone: error: {server.fatal}", file=sys.stderr, flush=True)
        return int(ExitCode.USER_ERROR)
    return 0


def _worker_main(settings: ServeSettings, sock: socket.socket) -> None:
    sys.exit(run_worker(settings, sock))


def _supervise(settings: ServeSettings, sock: socket.socket) -> int:
    """`--workers N`: N processes accept on one socket; SIGTERM drains them all."""
    metrics_dir = tempfile.mkdtemp(prefix="hone-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # read by each worker's metrics
    if not settings.threads:  # the cores shared out, not every worker on all of them
        settings.threads = max(1, (os.cpu_count() or 1) // settings.workers)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker_main, args=(settings, sock), name=f"hone-serve-{i}")
        for i in range(settings.workers)
    ]
    stopping: list[int] = []

    def forward(sig: int, frame: FrameType | None) -> None:
        stopping.append(sig)
        for w in workers:
            if w.pid is not None and w.exitcode is None:
                os.kill(w.pid, signal.SIGTERM if len(stopping) == 1 else signal.SIGKILL)

    previous: dict[int, Any] = {
        s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        for w in workers:
            w.start()
        codes = _wait(workers, stopping, forward)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return max(codes, default=0)


def _wait(workers: list[Any], stopping: list[int], forward: Any) -> list[int]:
    """Exit codes of all workers; one dying on its own stops the others."""
    while any(w.exitcode is None for w in workers):
        for w in workers:
            w.join(timeout=0.2)
            if w.exitcode not in (None, 0) and not stopping:
                log.error("hone serve: worker %s exited with %s; stopping", w.name, w.exitcode)
                forward(signal.SIGTERM, None)
    # A worker still starting (importing, loading) when the drain's SIGTERM came dies of that
    # signal before uvicorn handles it: it held no request, so that is a clean stop.
    return [
        0 if len(stopping) == 1 and w.exitcode == -signal.SIGTERM else abs(w.exitcode or 0)
        for w in workers
    ]
