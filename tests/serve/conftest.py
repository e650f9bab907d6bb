"""Fixtures for `hone serve`: tiny finished runs, and the real server as a subprocess on a
free loopback port (`--port 0`; the URL is read from what it prints)."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hone.config import load_config
from hone.engine import Trainer
from tests import forking
from tests.conftest import ROOT, TINY_GPT_RUN

QUIET = ["log.tensorboard=false", "log.progress=off", "train.checkpoint_every=0"]
RUNS = {
    "mlp": ("mlp-digits", ["model.width=16", "train.max_steps=20"]),
    "gpt": ("gpt-shakespeare-char", [*TINY_GPT_RUN, "train.max_steps=30"]),
}


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny classifier and a tiny character GPT, trained once for all serve tests."""
    root = tmp_path_factory.mktemp("serve-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HONE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hone-cache"))
        for name, (recipe, overrides) in RUNS.items():
            Trainer(config=load_config(recipe, [*overrides, *QUIET]), run_dir=root / name).fit()
    return {name: root / name for name in RUNS}


class Server:
    """`hone serve RUN --port 0 FLAGS` in its own process (a fork, tests/forking.py); `url`
    once it listens."""

    def __init__(self, run: Path, *flags: str, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.url = ""
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        if "HONE_API_KEY" not in (env or {}):  # a key from the caller's shell: not here
            full_env.pop("HONE_API_KEY", None)
        argv = ["serve", str(run), "--port", "0", "--threads", "1", "--log-level", "warning"]
        logs = Path(tempfile.gettempdir()) / f"hone-test-logs-{os.getpid()}"
        self.proc = forking.Forked([*argv, *flags], Path.cwd(), full_env, logs)
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(120) or not self.url:
            self.proc.kill()
            raise AssertionError(f"hone serve did not start: {self.output}")

    def _read(self) -> None:
        """Follow the server's stderr (a file) line by line until it exits."""
        with open(self.proc.err, "a+") as stderr:  # created if the server has not yet
            stderr.seek(0)
            pending = ""
            while True:
                exited = self.proc.poll() is not None
                pending += stderr.read()
                *lines, pending = pending.split("\n")
                for line in lines:
                    self.lines.append(line + "\n")
                    if not self.url and " on http://" in line:
                        self.url = line.split(" on ", 1)[1].split(" ", 1)[0]
                        self._listening.set()
                if exited:
                    break
                time.sleep(0.02)
        self.lines.append(pending)
        self._listening.set()  # it exited

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, self.output
            time.sleep(0.05)
        raise AssertionError(f"not ready after {timeout} s: {self.output}")

    def metric(self, name: str, headers: dict[str, str] | None = None) -> float:
        """The sum of a metric's samples in /metrics."""
        text = httpx.get(f"{self.url}/metrics", headers=headers).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and line[len(name)] in " {"
        )

    def wait_for_metric(self, name: str, value: float, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.metric(name) != value:
            assert time.monotonic() < deadline, f"{name} never reached {value}"
            time.sleep(0.02)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(60)


@pytest.fixture
def start_server() -> Iterator[type[Server]]:
    """Start servers (`start_server(run, *flags)`); all are killed when the test ends."""
    started: list[Server] = []

    def start(run: Path, *flags: str, env: dict[str, str] | None = None) -> Server:
        server = Server(run, *flags, env=env)
        started.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in started:
        server.close()


@pytest.fixture(scope="module")
def ready_server(request: pytest.FixtureRequest, serve_runs: dict[str, Path]) -> Iterator[Server]:
    """One ready server per test module, on the run and flags the module names in SERVE."""
    run, flags = request.module.SERVE
    server = Server(serve_runs[run], *flags)
    server.wait_ready()
    yield server
    server.close()
