"""torch's CPU threads, fitted to how busy the machine is while a run trains.

torch runs each operator on a fixed team of OpenMP threads that meet at a barrier when the
operator ends, so the slowest thread sets the pace. When another process takes one of the
cores, every operator waits for the thread that lost its core. Measured on a 2-core machine
(issue 15): the char GPT ran at 17.3k tokens/s idle with 2 threads, 4.4k with 2 threads beside
one CPU-bound process, and 11.0k with 1 thread beside it. No load reading predicts this
(a process may be runnable yet idle most of the time, or the other way round), so
`train.threads = "auto"` times a few steps at each candidate count early in the run and keeps
the fastest, then watches for the signs of a change (this process getting less CPU time than
its threads ask for, cores idling beside it, steps slowing down or speeding up) and times
them again, so that a run follows load that comes and goes.

The count is the process's, not the run's: a notebook or a program that trains between other
work keeps its own. So the trainer holds it only while it trains: `with trainer.threads:` around
each round (`run(until=...)`, `fit()`) sets the run's count and gives the caller's back when the
round ends, however it ends.

Written here because neither torch nor OpenMP adapts a team's size to the load.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import TYPE_CHECKING, Any

import torch

from hone.engine.observers import Observer

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer

CHECK_SECONDS = 1.0  # how often the load is read (two small reads, between steps)
FIRST_PROBE_SECONDS = 1.0  # the first probe, once allocations and caches have warmed up
REPROBE_SECONDS = 120.0  # a probe at least this often, for what the readings miss
# Probes at least this far apart, twice as far after each probe that kept the count (up to
# REPROBE_SECONDS): beside two busy processes one thread gets 2/3 of a core whatever it does,
# and probing every second cost 30% of the run (28 probes in 64 s).
MIN_GAP_SECONDS = 5.0
TRIAL_SECONDS = 0.3  # each candidate is timed for at least this long ...
TRIAL_STEPS = 3  # ... and at least this many steps (the median step counts)
MIN_GAIN = 0.08  # a count other than the current one must be this much faster to win
# Probe when this process got less than this share of the CPU time its threads asked for
# (other processes hold our cores), when this many cores sat idle beside fewer threads, or
# when the median step time moved this far from the last probe's. The last catches a
# low-priority (niced) process: it takes little CPU time, yet each slice it takes stalls all
# of a team's threads at the next barrier (measured: 2 threads ran 3-6x slower beside two
# `nice -n 19` test runs, while this process still got most of its CPU time).
MIN_SHARE = 0.8
IDLE_CORES = 0.6
DRIFT = 0.3


class LoadReading:
    """This process's CPU time and the machine's idle time, both in seconds, and the wall
    clock: two readings give the share of the cores this process got and the idle cores."""

    def __init__(self) -> None:
        times = os.times()
        self.wall = time.perf_counter()
        self.cpu = times.user + times.system
        self.idle = idle_seconds()

    def since(self, earlier: LoadReading, threads: int) -> tuple[float, float | None]:
        """(share of `threads` cores this process used, idle cores or None) over the span."""
        wall = max(self.wall - earlier.wall, 1e-9)
        share = (self.cpu - earlier.cpu) / (wall * threads)
        if self.idle is None or earlier.idle is None:
            return share, None
        return share, (self.idle - earlier.idle) / wall


def idle_seconds(stat: str = "/proc/stat") -> float | None:
    """Seconds all CPUs have been idle since boot (Linux); None where /proc/stat is absent."""
    try:
        with open(stat) as f:
            fields = f.readline().split()
    except OSError:
        return None
    # "cpu user nice system idle iowait ...", in clock ticks
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def thread_setting(value: int | str) -> int:
    """`train.threads` as a count, 0 meaning auto (the config loader checked the value)."""
    assert value == "auto" or (type(value) is int and value >= 1), value
    return 0 if value == "auto" else int(value)


def candidates(max_threads: int) -> list[int]:
    """Thread counts worth timing, most first: all, all but one, halves down to one."""
    counts = {max_threads, max_threads - 1, 1}
    n = max_threads
    while n > 1:
        n //= 2
        counts.add(n)
    return sorted((c for c in counts if c >= 1), reverse=True)


class ThreadCount(Observer):
    """torch's thread count while a trainer trains: `count` (None: torch's count is left alone)
    for the length of each round, entered as a context; the caller's count comes back when the
    round ends, so between rounds and after the run the process runs as it did before."""

    def __init__(self, count: int | None) -> None:
        self.current = count
        self._caller: int | None = None  # the count before the round; None outside a round

    def __enter__(self) -> ThreadCount:
        if self.current is not None and self._caller is None:
            self._caller = torch.get_num_threads()
            torch.set_num_threads(self.current)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._caller is not None:
            torch.set_num_threads(self._caller)
            self._caller = None


class ThreadTuner(ThreadCount):
    """Keeps torch's thread count at the fastest for the machine's current load.

    It probes once after FIRST_PROBE_SECONDS of training, then whenever a reading taken every
    CHECK_SECONDS says so: this process got less than MIN_SHARE of the CPU time its threads
    asked for (while it could use fewer), IDLE_CORES sat idle while it ran on fewer threads
    than it may, or the median step time moved by DRIFT from the last probe's; but never
    within `gap` seconds of the last probe (MIN_GAP_SECONDS, doubled by each probe that kept
    the count). A probe takes the current count's median step over the last interval, times
    TRIAL_STEPS steps and TRIAL_SECONDS at each other candidate (less when one step shows it
    cannot win), and keeps the fastest median step (another count must win by MIN_GAIN). On
    an idle machine that is one probe (about TRIAL_SECONDS at each other count), then one
    clock read per step and two small reads a second. A round that ends during a probe drops
    it (the next round's steps may run beside another load): the count stays the chosen one.
    """

    def __init__(self, max_threads: int) -> None:
        super().__init__(max_threads)
        self.current: int = max_threads  # always a count here
        self.max_threads = max_threads
        self.candidates = candidates(max_threads)
        self.clock = 0.0  # training seconds seen by the tuner
        self.last_probe = 0.0
        self.gap = MIN_GAP_SECONDS  # the least training time between two probes, for now
        self.reference = 0.0  # the chosen count's median step time at the last probe
        self.recent: list[float] = []  # step times since the last check
        self.queue: list[int] = []  # counts still to be timed in this probe
        self.trial: list[float] = []  # step times of the count on trial
        self.results: dict[int, float] = {}
        self.probes: list[dict[str, Any]] = []  # every probe's outcome, for the log
        self._last = 0.0
        self._reading: LoadReading | None = None
        self._reason = ""
        self.now = time.perf_counter  # the step clock (a test gives its own)
        self.read_load = LoadReading  # the load readings (likewise)

    def __enter__(self) -> ThreadTuner:
        super().__enter__()
        # The time between two rounds is no step's: the clocks start again.
        self._last = self.now()
        self._reading, self.recent = self.read_load(), []
        return self

    def __exit__(self, *exc: object) -> None:
        if self.queue:  # a probe cut short: its timings are of a load that may be gone
            self.queue, self.trial, self.results = [], [], {}
        super().__exit__(*exc)

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        now = self.now()
        seconds, self._last = now - self._last, now
        self.clock += seconds
        if self.queue:
            self._trial_step(trainer, seconds)
            return
        assert self._reading is not None
        self.recent.append(seconds)
        if now - self._reading.wall < CHECK_SECONDS:
            return
        reading = self.read_load()
        step = statistics.median(self.recent)
        reason = self.probe_reason(*reading.since(self._reading, self.current), step)
        self._reading, self.recent = reading, []
        if reason:
            self._start_probe(reason, step)

    def probe_reason(
        self, share: float, idle_cores: float | None, step_seconds: float | None = None
    ) -> str:
        """Why the thread count should be measured again now ('' when it should not), from
        the readings over the last check interval and its median step time."""
        if not self.probes:
            return "first probe" if self.clock >= FIRST_PROBE_SECONDS else ""
        if self.clock - self.last_probe < self.gap:
            return ""
        if step_seconds and self.reference and abs(step_seconds / self.reference - 1) > DRIFT:
            return f"steps took {step_seconds / self.reference:.2f}x as long as at the last probe"
        if share < MIN_SHARE and self.current > self.candidates[-1]:
            return f"this process got {share:.0%} of {self.current} cores"
        if idle_cores is not None and self.current < self.max_threads and idle_cores > IDLE_CORES:
            return f"{idle_cores:.1f} cores idle beside {self.current} threads"
        if self.clock - self.last_probe > REPROBE_SECONDS:
            return f"no probe for {REPROBE_SECONDS:.0f} s"
        return ""

    def _start_probe(self, reason: str, current_seconds: float) -> None:
        """Time every other candidate; the current count's median step over the last check
        interval stands for its own trial (timing it again would cost most when it is the
        slow one: beside a busy process one 2-thread step took 5.7 s, a 1-thread one 0.2 s)."""
        self._reason = reason
        self.results, self.trial = {self.current: current_seconds}, []
        self.queue = [c for c in self.candidates if c != self.current]
        torch.set_num_threads(self.queue[0])
        self._last = self.now()

    def _trial_step(self, trainer: Trainer, seconds: float) -> None:
        self.trial.append(seconds)
        # A count whose step took over twice the best one's cannot win: stop timing it.
        hopeless = seconds > 2 * min(self.results.values())
        if not hopeless and (len(self.trial) < TRIAL_STEPS or sum(self.trial) < TRIAL_SECONDS):
            return
        # The first step after a switch pays the new team's start-up: left out when there
        # are others.
        timed = seconds if hopeless else statistics.median(self.trial[1:] or self.trial)
        self.results[self.queue.pop(0)] = timed
        self.trial = []
        if self.queue:
            torch.set_num_threads(self.queue[0])
        else:
            self._choose(trainer)
        self._last = self.now()
        self._reading, self.recent = self.read_load(), []

    def _choose(self, trainer: Trainer) -> None:
        incumbent = self.results[self.current]
        best = min(self.results, key=self.results.__getitem__)
        if self.results[best] < incumbent * (1 - MIN_GAIN):
            self.current, self.gap = best, MIN_GAP_SECONDS
        else:  # the count stood: the readings that asked for this probe ask less often
            self.gap = min(2 * self.gap, REPROBE_SECONDS)
        torch.set_num_threads(self.current)
        self.last_probe, self.reference = self.clock, self.results[self.current]
        probe = {
            "step": trainer.state.step,
            "split": "threads",
            "threads": self.current,
            "reason": self._reason,
            "step_seconds": {str(k): round(v, 6) for k, v in self.results.items()},
        }
        self.probes.append(probe)
        trainer.emit(probe)


def thread_count(trainer: Trainer) -> ThreadCount:
    """What `train.threads` asks of a run: a fixed count; else the tuner, when tuning can pay:
    a CPU run in one process that is not deterministic (the count changes how float sums are
    split, and a deterministic run must not depend on the machine's load); else torch's count
    as the caller left it."""
    t = trainer.cfg.train
    count = thread_setting(t.threads)
    if count:
        return ThreadCount(count)
    max_threads = torch.get_num_threads()
    if (
        trainer.device.type != "cpu"
        or trainer.strategy is not None
        or t.deterministic
        or max_threads < 2
    ):
        return ThreadCount(None)
    return ThreadTuner(max_threads)
