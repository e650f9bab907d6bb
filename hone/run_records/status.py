"""Is a run alive? The status file (status.json) and how a reader tells running from killed.

The trainer of rank 0 keeps the file (hone.engine.run_status): "running" with its process
id, host, the process's start time and a heartbeat, rewritten every few seconds; then
"finished" after the summary, "stopped" when a signal ended the loop (a checkpoint was
written: `--resume` continues), or "exited" when the trainer went away without either (an
exception; the exit code and error when the process knew them). SIGKILL leaves "running"
behind, so a reader checks the process itself on the same host (the pid, and its start time
against pid reuse) and the heartbeat's age on another host (a shared file system).

This module only reads files and /proc: no torch, so `hone runs` stays fast; it sits in the
foundation beside the file names (hone.run_files) so that the engine, which writes the file,
and `hone runs`, `hone report` and the MLflow mirror, which read it, share one format.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hone.run_files import RunFiles
from hone.run_records.reader import read_json

# What the trainer writes in "state".
RUNNING, FINISHED, STOPPED, EXITED = "running", "finished", "stopped", "exited"
# What a reader concludes (`Status.state`): the trainer's states, and these.
FAILED = "failed"  # exited without finishing: an exception, or the NaN guard gave up (exit 3)
KILLED = "killed"  # "running" left behind by a process that is gone (SIGKILL, OOM killer, power)
PRUNED = "pruned"  # a tuning trial the pruner ended (its summary says so)
INCOMPLETE = "incomplete"  # no status file (a run from before them) and no summary
STATES = (RUNNING, FINISHED, STOPPED, FAILED, KILLED, PRUNED, INCOMPLETE)

HEARTBEAT_SECONDS = 10.0  # how often a running trainer rewrites the file
# A run on another host whose heartbeat is older than this is taken for dead. Generous: a
# heartbeat is written between steps, and one step or evaluation of a big model can be long.
STALE_SECONDS = 600.0


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot, from /proc), None where there is
    no /proc or no such process; with the pid it names one process, even after pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, started: str | None) -> bool:
    """Whether process `pid` (started at `started`, as `process_start` gave it) still runs
    on this host."""
    if Path("/proc/self/stat").exists():
        return started is not None and process_start(pid) == started
    try:  # no /proc (macOS): signal 0 only checks that the process exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process holds that pid
        return True
    return True


def this_process() -> dict[str, Any]:
    """pid, host and start time of the calling process, as the status file records them."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "process_start": process_start(pid)}


def write(path: Path, record: dict[str, Any]) -> None:
    """Replace the status file atomically: a reader sees the old record or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, default=str) + "\n")
    os.replace(tmp, path)


@dataclass
class Status:
    """What a reader concludes about a run: `state` (one of STATES) and why."""

    state: str
    detail: str = ""  # "SIGTERM", "exit 1: RuntimeError: ...", "no heartbeat for 12 min"
    exit_code: int | None = None
    record: dict[str, Any] | None = None  # the status file's record, when there is one

    @property
    def label(self) -> str:
        """How `hone runs` shows it: 'failed (exit 3)', 'stopped (SIGTERM)', 'running'."""
        if self.state == FAILED and self.exit_code is not None:
            return f"{FAILED} (exit {self.exit_code})"
        if self.state == STOPPED and self.detail:
            return f"{STOPPED} ({self.detail})"
        return self.state


def _summary_state(summary: dict[str, Any]) -> str:
    return PRUNED if summary.get("stop_reason") == PRUNED else FINISHED


def _alive(record: dict[str, Any], now: float) -> tuple[bool, str]:
    """Whether the trainer that wrote a "running" record still runs, and if not, why not."""
    if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
        if process_alive(record["pid"], record.get("process_start")):
            return True, ""
        return False, f"process {record['pid']} is gone"
    age = now - float(record.get("heartbeat", 0.0))
    if age <= STALE_SECONDS:
        return True, ""
    return False, f"no heartbeat for {age / 60:.0f} min (host {record.get('host')})"


def status_of(files: RunFiles, summary: dict[str, Any] | None, now: float | None = None) -> Status:
    """The state of the run in `files`, given its summary.json (None when it has none).

    A summary written after the status file's last write means the run ended there (a
    pruned trial's summary comes after its trainer stopped writing), whatever the file says;
    a resumed run rewrites the status file, so an older summary does not count.
    """
    now = time.time() if now is None else now
    record = read_json(files.status)
    if record is None:
        if summary is not None:
            return Status(_summary_state(summary))
        return Status(INCOMPLETE, "no summary and no status file")
    state = record.get("state")
    if state == FINISHED:
        return Status(_summary_state(summary or {}), exit_code=0, record=record)
    if state == STOPPED:
        return Status(STOPPED, str(record.get("signal", "")), record.get("exit_code"), record)
    if summary is not None and _newer(files.summary, files.status):
        return Status(_summary_state(summary), record=record)
    if state == EXITED:
        code = record.get("exit_code")
        return Status(FAILED, str(record.get("error") or ""), code, record)
    alive, why = _alive(record, now)
    return Status(RUNNING, record=record) if alive else Status(KILLED, why, record=record)


def _newer(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_mtime >= b.stat().st_mtime
    except OSError:
        return False
