"""`hone` commands as forks of a process that has imported torch and hone already.

Most of a short `python -m hone ...` is the import of torch (1.5-3 s on 2 cores); the suite
runs hundreds of them. A fork server imports once, then forks a child per command, which
runs `hone.cli.main(argv)` (what the `hone` script runs) in its folder, with its
environment, stdout and stderr, and exits as that process would. The children are real
processes: their pid takes real signals, and the exit code is the one the shell would see.

One server runs one command at a time; a pool holds as many servers as commands have run at
once. No library does this for a test suite (multiprocessing's forkserver runs functions,
not commands with their own environment and file descriptors), hence this small module.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

# The server imports what most commands import (torch's compiler stack comes with
# torch.optim), runs no torch operation (a fork after OpenMP threads started would hang),
# then answers each request with the child's pid and, once it exited, its exit code.
SERVER = """
import atexit, gc, json, os, runpy, sys, threading, traceback
import matplotlib.pyplot, onnxscript, sklearn.datasets, torch, torch._dynamo, hone.engine
from hone.cli import main


def finish(run):
    # As the interpreter ends a process (non-daemon threads joined, atexit handlers run,
    # output flushed), but without its last collection of every object: in a fork that
    # touches, and so copies, every page the server shares with it (seconds a command).
    try:
        code = run()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if not isinstance(stop.code, int | None):
            print(stop.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass
    os._exit(code)


def script(path):
    sys.argv = [path]
    runpy.run_path(path, run_name="__main__")
    return 0


threads = torch.get_num_threads()  # what a fresh interpreter would pick without OMP_NUM_THREADS
gc.freeze()  # the children's collections leave the server's objects (and their pages) alone
while line := sys.stdin.readline():
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.setsid()  # its own process group: a timeout ends it and whatever it started
        os.environ.clear()
        os.environ.update(request["env"])
        torch.set_num_threads(int(request["env"].get("OMP_NUM_THREADS", threads)))
        os.chdir(request["cwd"])
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for fd, name in ((1, "out"), (2, "err")):
            os.dup2(os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        if "script" in request:
            finish(lambda: script(request["script"]))
        sys.argv = ["hone", *request["argv"]]
        finish(lambda: main(request["argv"]))
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class Server:
    """One fork server; `start` one command, then `wait` for it before the next."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            cwd=cwd,  # not the repository: `python -c` imports from "."
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def start(self, request: dict[str, object]) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def wait(self, timeout: float | None) -> int | None:
        """The child's exit code (negative: the signal that ended it); None on timeout."""
        assert self.process.stdout is not None
        if not select.select([self.process.stdout], [], [], timeout)[0]:
            return None
        line = self.process.stdout.readline()
        assert line, "the fork server died"
        return int(line)

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Pool:
    """Servers to reuse; a new one starts when every server is busy."""

    def __init__(self) -> None:
        self.free: queue.SimpleQueue[Server] = queue.SimpleQueue()
        self.all: list[Server] = []
        self.lock = threading.Lock()
        self.folder: Path | None = None

    def get(self) -> Server:
        try:
            return self.free.get_nowait()
        except queue.Empty:
            pass
        with self.lock:
            if self.folder is None:
                import tempfile

                self.folder = Path(tempfile.mkdtemp(prefix="hone-fork-server-"))
            # The server's own environment: the test process's, with the repository importable.
            root = str(Path(__file__).resolve().parents[1])
            env = {**os.environ, "PYTHONPATH": root}
            server = Server(env, self.folder)
            self.all.append(server)
            return server

    def put(self, server: Server) -> None:
        self.free.put(server)

    def close(self) -> None:
        for server in self.all:
            server.close()


POOL = Pool()
NUMBERS = itertools.count()
atexit.register(POOL.close)


class Forked:
    """A `hone` command running as a fork: Popen's pid, poll, wait, send_signal and kill;
    its stdout and stderr go to files (`stdout_text()`, `stderr_text()` once it ended)."""

    def __init__(
        self, argv: list[str], cwd: Path, env: dict[str, str], logs: Path, script: str = ""
    ) -> None:
        """`hone ARGV`, or with `script` the python file of that name in `cwd`."""
        self.server = POOL.get()
        logs.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{next(NUMBERS)}"  # never a file an earlier command wrote
        self.out, self.err = logs / f"{name}.out", logs / f"{name}.err"
        request: dict[str, object] = {"argv": argv, "cwd": str(cwd), "env": env}
        request.update(
            out=str(self.out), err=str(self.err), **({"script": script} if script else {})
        )
        self.pid = self.server.start(request)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._finish(self.server.wait(0))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._finish(self.server.wait(timeout))
            if self.returncode is None:
                raise subprocess.TimeoutExpired(["hone"], timeout or 0)
        return self.returncode

    def _finish(self, code: int | None) -> None:
        if code is not None:
            self.returncode = code
            POOL.put(self.server)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL to the command and everything it started (its process group)."""
        if self.returncode is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait()

    def stdout_text(self) -> str:
        return self.out.read_text() if self.out.exists() else ""

    def stderr_text(self) -> str:
        return self.err.read_text() if self.err.exists() else ""


def run(
    argv: list[str], cwd: Path, env: dict[str, str], logs: Path, timeout: float, script: str = ""
) -> subprocess.CompletedProcess[str]:
    """`hone ARGV` (or `script`) to its end, as subprocess.run would (TimeoutExpired past
    `timeout`, once the command and what it started are killed)."""
    process = Forked(argv, cwd, env, logs, script)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    said = (process.stdout_text(), process.stderr_text())
    for path in (process.out, process.err):
        path.unlink(missing_ok=True)
    return subprocess.CompletedProcess(["hone", *argv], code, *said)
