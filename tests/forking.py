"""`hone` commands as forks of a process that has imported torch and hone already.

Most of a short `python -m hone ...` is the import of torch (1.5-3 s on 2 cores); the suite
runs hundreds of them. A fork server imports once, then forks a child per command, which
runs `hone.cli.main(argv)` (what the `hone` script runs) in its folder, with its
environment, stdout and stderr, and exits as that process would. The children are real
processes: their pid takes real signals, and the exit code is the one the shell would see.

One server runs every command, side by side if they overlap: a second server would pay the
imports again (8 CPU seconds on 2 cores). No library does this for a test suite
(multiprocessing's forkserver runs functions, not commands with their own environment and
file descriptors), hence this small module.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# The server imports what most commands import (torch's compiler stack comes with
# torch.optim), runs no torch operation (a fork after OpenMP threads started would hang),
# then answers each request with "started PID" and each child's end with "exited PID CODE".
# One thread that waits in select() on its stdin and its children's pidfds: a thread of its
# own could hold a lock (stdout's) at the moment of a fork, which the child would inherit.
SERVER = """
import gc, json, os, runpy, select, sys
import matplotlib.pyplot, onnxscript, sklearn.datasets, torch, torch._dynamo, hone.engine
from hone.cli import main
from hone.distributed.strategy import end_process


def finish(run):
    # As the interpreter ends a process (non-daemon threads joined, atexit handlers run,
    # output flushed), but without its last collection of every object: in a fork that
    # touches, and so copies, every page the server shares with it (seconds a command):
    # hone.distributed.strategy.end_process, what `python -m hone` does after a group.
    try:
        code = run()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if not isinstance(stop.code, int | None):
            print(stop.code, file=sys.stderr)
    except BaseException as error:
        # As the interpreter reports an uncaught exception: sys.last_value first (atexit
        # handlers read it: a run's status records the exit), then sys.excepthook.
        sys.last_type, sys.last_value, sys.last_traceback = type(error), error, error.__traceback__
        sys.excepthook(type(error), error, error.__traceback__)
        code = 1
    end_process(code)


def script(path, argv):
    sys.argv = [path, *argv]
    runpy.run_path(path, run_name="__main__")
    return 0


def child(request):
    os.setsid()  # its own process group: a timeout ends it and whatever it started
    os.environ.clear()
    os.environ.update(request["env"])
    torch.set_num_threads(int(request["env"].get("OMP_NUM_THREADS", threads)))
    os.chdir(request["cwd"])
    if "path" in request:  # the import path of the process it stands for, not `python -c`'s
        sys.path[:] = request["path"]
    os.dup2(os.open(request.get("in", os.devnull), os.O_RDONLY), 0)
    for fd, name in ((1, "out"), (2, "err")):
        os.dup2(os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    if "script" in request:
        finish(lambda: script(request["script"], request["argv"]))
    sys.argv = ["hone", *request["argv"]]
    finish(lambda: main(request["argv"]))


threads = torch.get_num_threads()  # what a fresh interpreter would pick without OMP_NUM_THREADS
gc.freeze()  # the children's collections leave the server's objects (and their pages) alone
children, pending = {}, b""  # {pidfd: pid}; the start of a request line not read in full
while True:
    ready = select.select([0, *children], [], [])[0]
    for fd in ready:
        if fd != 0:  # a child ended
            pid = children.pop(fd)
            os.close(fd)
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            os.write(1, f"exited {pid} {code}\\n".encode())
    if 0 in ready:
        data = os.read(0, 1 << 20)
        if not data:
            break
        *lines, pending = (pending + data).split(b"\\n")
        for line in lines:
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                child(request)
            children[os.pidfd_open(pid)] = pid
            os.write(1, f"started {pid}\\n".encode())
"""


class Server:
    """The fork server: `start` commands, side by side, and `wait` for each one's end."""

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
        self.requests = threading.Lock()  # one request at a time: "started" lines in order
        self.started: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self.exited: dict[int, int] = {}  # {pid: exit code} of children nobody waited for yet
        self.changed = threading.Condition()
        self.alive = True
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            kind, pid, *code = line.split()
            if kind == "started":
                self.started.put(int(pid))
                continue
            with self.changed:
                self.exited[int(pid)] = int(code[0])
                self.changed.notify_all()
        with self.changed:
            self.alive = False
            self.changed.notify_all()
        self.started.put(None)

    def start(self, request: dict[str, object]) -> int:
        """The pid of the child that runs `request`."""
        assert self.process.stdin is not None
        with self.requests:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            pid = self.started.get()
        assert pid is not None, "the fork server died"
        return pid

    def wait(self, child: Forked, timeout: float | None) -> int | None:
        """The child's exit code (negative: the signal that ended it); None on timeout.

        The code moves from `exited` to `child.returncode` under the lock: two threads may
        wait on one child (a test's, and one that follows its output), and the one that
        does not take the code must still see it (a pid is reused later, so `exited` cannot
        keep it)."""

        def ended() -> bool:
            if child.returncode is None and child.pid in self.exited:
                child.returncode = self.exited.pop(child.pid)
            return child.returncode is not None or not self.alive

        with self.changed:
            self.changed.wait_for(ended, timeout)
            assert child.returncode is not None or self.alive, "the fork server died"
            return child.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


_server: Server | None = None
_server_lock = threading.Lock()
NUMBERS = itertools.count()


def server() -> Server:
    """The one fork server, started at the first command."""
    global _server
    with _server_lock:
        if _server is None:
            folder = Path(tempfile.mkdtemp(prefix="hone-fork-server-"))
            # The server's own environment: the test process's, with the repository importable.
            root = str(Path(__file__).resolve().parents[1])
            _server = Server({**os.environ, "PYTHONPATH": root}, folder)
            atexit.register(_server.close)
        return _server


class Forked:
    """A `hone` command running as a fork: Popen's pid, poll, wait, send_signal and kill;
    its stdout and stderr go to files (`stdout_text()`, `stderr_text()` once it ended)."""

    def __init__(
        self,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        logs: Path,
        script: str = "",
        stdin: Path | None = None,
        path: list[str] | None = None,
    ) -> None:
        """`hone ARGV`, or with `script` the python file of that name in `cwd` given ARGV;
        its stdin the file `stdin` (else empty); its sys.path `path` (else the server's)."""
        self.server = server()
        logs.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{next(NUMBERS)}"  # never a file an earlier command wrote
        self.out, self.err = logs / f"{name}.out", logs / f"{name}.err"
        request: dict[str, object] = {"argv": argv, "cwd": str(cwd), "env": env}
        request.update(out=str(self.out), err=str(self.err))
        request.update({"script": script} if script else {})
        request.update({"in": str(stdin)} if stdin else {})
        request.update({"path": path} if path is not None else {})
        self.pid = self.server.start(request)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.server.wait(self, 0)

    def wait(self, timeout: float | None = None) -> int:
        code = self.server.wait(self, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(["hone"], timeout or 0)
        return code

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
            # bounded: a test's teardown must fail, not hang the suite, if the exit is lost
            self.wait(60)

    def stdout_text(self) -> str:
        return self.out.read_text() if self.out.exists() else ""

    def stderr_text(self) -> str:
        return self.err.read_text() if self.err.exists() else ""


def run(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    logs: Path,
    timeout: float,
    script: str = "",
    stdin: Path | None = None,
    path: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`hone ARGV` (or `script`) to its end, as subprocess.run would (TimeoutExpired past
    `timeout`, once the command and what it started are killed)."""
    process = Forked(argv, cwd, env, logs, script, stdin, path)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    said = (process.stdout_text(), process.stderr_text())
    for log in (process.out, process.err):
        log.unlink(missing_ok=True)
    return subprocess.CompletedProcess(["hone", *argv], code, *said)
