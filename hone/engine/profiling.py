"""Profiling: torch.profiler over a window of steps after warm-up, as an observer.

`hone train --profile` (train.profile = true) skips `train.profile_wait` steps, warms the
profiler up for `train.profile_warmup` and records `train.profile_steps` (a schedule, never
the whole run; shortened to fit a short run). When the window closes, rank 0 writes:

    profile-trace.json      the window's Chrome trace (Perfetto, chrome://tracing)
    tensorboard/profile/    the same trace, for TensorBoard's profiler plugin
    profile.txt             torch.profiler's table of operators by self time
    profile.json            the top operators and the share of step time in each phase

The phases are timed at the observer hooks, so nothing is added to the loop itself:

    data        previous step's end -> on_step_start (the batcher, stop checks)
    forward     on_step_start -> end of the model's forward (per micro-batch)
    backward    end of forward -> on_after_backward, or the next micro-batch's forward
                (loss, penalties, backward)
    optimizer   optimizer.step, from its step pre-hook to its post-hook
    logging     the rest, up to on_step_end: clipping, the NaN guard, zero_grad, the
                schedule, logging, evaluation, other observers

L-BFGS and Newton evaluate the loss inside `optimizer.step` (a closure): their forward and
backward passes count as optimizer time, and forward and backward hold only moving the
batch to the device. The device is synchronized at each boundary of a profiled step (only
then), so that a phase's time is the work it queued, not the time to queue it.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text
from torch import nn
from torch.profiler import ProfilerAction, profile, record_function, schedule
from torch.utils.hooks import RemovableHandle

from hone.config import opt, register_train_part
from hone.config.schema import TrainConfig
from hone.engine.observers import Observer
from hone.run_files import RunFiles
from hone.track.progress import StderrConsole

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer


@register_train_part("profiler")
@dataclass
class ProfileConfig:
    """The profiler's keys in [train] (`hone train --profile` sets the first)."""

    profile: bool = opt(
        False,
        "profile a window of steps after warm-up with torch.profiler "
        "(trace, top ops, step-time shares)",
    )
    profile_wait: int = opt(
        5, "profiling: steps run unprofiled before the profiler's warm-up", ge=0
    )
    profile_warmup: int = opt(2, "profiling: steps profiled and discarded before the window", ge=0)
    profile_steps: int = opt(5, "profiling: steps in the window (shortened to fit the run)", ge=1)


PHASES = ("data", "forward", "backward", "optimizer", "logging")
TOP_OPS = 20  # operators in profile.json and profile.txt
PRINTED_OPS = 10
_RECORDING = (ProfilerAction.RECORD, ProfilerAction.RECORD_AND_SAVE)


def fit_window(remaining: int, wait: int, warmup: int, active: int) -> tuple[int, int, int]:
    """The (wait, warmup, active) steps of the window, shortened to fit a run with
    `remaining` steps (0: unknown, kept as asked): the wait goes first, then the warm-up
    but its first step (the first steps pay one-time costs); one step at least is recorded."""
    if remaining:
        kept_warmup = min(warmup, 1, remaining - 1)
        active = max(1, min(active, remaining - kept_warmup))
        warmup = max(0, min(warmup, remaining - active))
        wait = max(0, min(wait, remaining - active - warmup))
    return wait, warmup, active


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class PhaseClock:
    """Wall time by phase: each boundary closes the running phase and opens the next."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.phase = ""  # "": not timing
        self.mark = 0.0

    def switch(self, phase: str) -> None:
        """Close the running phase (if any) and open `phase` ("": stop timing)."""
        _synchronize(self.device)
        now = time.perf_counter()
        if self.phase:
            self.seconds[self.phase] += now - self.mark
        self.phase, self.mark = phase, now

    def shares(self) -> dict[str, float]:
        """Each phase's share of the timed seconds (they sum to 1; empty if nothing was timed)."""
        total = sum(self.seconds.values())
        return {k: v / total for k, v in self.seconds.items()} if total > 0 else {}


class Profiler(Observer):
    """Profiles a window of steps with torch.profiler and times each step's phases; writes
    the trace, the operator table and profile.json, and prints a short report at the end."""

    def __init__(self, files: RunFiles, cfg: TrainConfig) -> None:
        self.files, self.cfg = files, cfg
        self.prof: profile | None = None
        self.clock: PhaseClock | None = None
        self.handles: list[RemovableHandle] = []
        self.data_range: record_function | None = None
        self.steps: list[int] = []  # the trainer's steps timed in the window
        self.window = (0, 0, 0)
        self.report: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.dist.is_main:  # one process profiles; the others run as they would
            return
        t = self.cfg
        remaining = max(trainer.total_steps - trainer.state.step, 1) if trainer.total_steps else 0
        self.window = fit_window(remaining, t.profile_wait, t.profile_warmup, t.profile_steps)
        wait, warmup, active = self.window
        self.clock = PhaseClock(trainer.device)
        self.prof = profile(
            schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=1),
            on_trace_ready=lambda prof: self._write(trainer, prof),
            record_shapes=False,
            with_stack=False,
        )
        self.prof.start()
        self._enter_step(trainer)

    def _enter_step(self, trainer: Trainer) -> None:
        """The profiler moved to the next step: if it is recorded, time it from here."""
        assert self.prof is not None and self.clock is not None
        if self.prof.current_action not in _RECORDING:
            return
        if not self.handles:
            self._add_hooks(trainer)
        self.clock.switch("data")
        self.data_range = record_function("hone: data")  # the batcher, visible in the trace
        self.data_range.__enter__()

    def _close_data_range(self) -> None:
        if self.data_range is not None:
            self.data_range.__exit__(None, None, None)
            self.data_range = None

    def _add_hooks(self, trainer: Trainer) -> None:
        clock = self.clock
        assert clock is not None
        # The module the step calls (compiled or wrapped), so that evaluation's forward
        # passes (logging time) and a closure's (optimizer time) are not taken for the step's.
        forward = trainer.stepper.forward
        module = forward if isinstance(forward, nn.Module) else trainer.model

        def before_forward(*_: Any) -> None:
            if clock.phase in ("forward", "backward"):
                clock.switch("forward")

        def after_forward(*_: Any) -> None:
            if clock.phase == "forward":
                clock.switch("backward")

        def before_optimizer(*_: Any) -> None:
            if clock.phase:
                clock.switch("optimizer")

        def after_optimizer(*_: Any) -> None:
            if clock.phase:
                clock.switch("logging")

        self.handles = [
            module.register_forward_pre_hook(before_forward),
            module.register_forward_hook(after_forward),
            trainer.optimizer.register_step_pre_hook(before_optimizer),
            trainer.optimizer.register_step_post_hook(after_optimizer),
        ]

    def _remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def on_step_start(
        self, trainer: Trainer, batches: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> None:
        if self.clock is None or not self.clock.phase:
            return
        self._close_data_range()
        self.steps.append(trainer.state.step + 1)
        self.clock.switch("forward")

    def on_after_backward(self, trainer: Trainer) -> None:
        if self.clock is not None and self.clock.phase:
            self.clock.switch("logging")

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        if self.prof is None:
            return
        assert self.clock is not None
        if self.clock.phase:
            self.clock.switch("")
        self.prof.step()  # after the window's last step: the trace is ready (_write)
        if self.report is not None:
            self._stop()
        else:
            self._enter_step(trainer)

    def _stop(self) -> None:
        assert self.prof is not None and self.clock is not None
        self.clock.phase = ""  # a step begun after the last one is not counted
        self._close_data_range()
        prof, self.prof = self.prof, None
        prof.stop()  # inside the window (the run ended early): writes what it recorded
        self._remove_hooks()

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        if self.prof is not None:
            self._stop()
        if not trainer.dist.is_main:
            return
        if self.report is None:
            wait, warmup, _ = self.window
            warnings.warn(
                f"profile: the run ended before the profiling window (after {wait + warmup} "
                "steps); nothing was written; lower --train.profile_wait or "
                "--train.profile_warmup",
                stacklevel=2,
            )
            return
        print_report(self.report)

    def _write(self, trainer: Trainer, prof: profile) -> None:
        """on_trace_ready: the trace, the operator table and profile.json."""
        # A trace is saved once; TensorBoard's plugin finds the copy by its name (*.pt.trace.json).
        prof.export_chrome_trace(str(self.files.profile_trace))
        self.files.tensorboard_profile_trace.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.files.profile_trace, self.files.tensorboard_profile_trace)
        on_device = trainer.device.type == "cuda"
        sort_by = "self_device_time_total" if on_device else "self_cpu_time_total"
        averages = prof.key_averages()
        table = averages.table(sort_by=sort_by, row_limit=TOP_OPS)
        if on_device:  # the host's view too: launch overhead, Python, the data
            table += "\n" + averages.table(sort_by="self_cpu_time_total", row_limit=TOP_OPS)
        self.files.profile_table.write_text(table)
        # ProfilerStep#N ranges hold the Python between operators as their self time.
        ops = [e for e in averages if not e.key.startswith("ProfilerStep")]
        ops.sort(key=lambda e: getattr(e, sort_by), reverse=True)
        assert self.clock is not None
        num_steps = len(self.steps)
        seconds = self.clock.seconds
        self.report = {
            "steps": self.steps,
            "window": dict(zip(("wait", "warmup", "active"), self.window, strict=True)),
            "device": str(trainer.device),
            "step_seconds": sum(seconds.values()) / num_steps if num_steps else None,
            "shares": self.clock.shares(),
            "seconds": seconds,
            "sort_by": sort_by,
            "top_ops": [_op_row(e, on_device) for e in ops[:TOP_OPS]],
            "trace": str(self.files.profile_trace),
            "tensorboard": str(self.files.tensorboard_profile_trace),
        }
        trainer.log.write_json(self.files.profile.name, self.report)


def _op_row(event: Any, on_device: bool) -> dict[str, Any]:
    row = {
        "name": event.key,
        "count": event.count,
        "self_cpu_seconds": event.self_cpu_time_total / 1e6,  # microseconds in torch
        "cpu_seconds": event.cpu_time_total / 1e6,
    }
    if on_device:
        row["self_device_seconds"] = event.self_device_time_total / 1e6
    return row


def shares_line(report: dict[str, Any]) -> str:
    """One line: the profiled steps, time per step and each phase's share."""
    steps = report["steps"]
    span = f"steps {steps[0]}-{steps[-1]}" if steps else "no steps"
    seconds = report["step_seconds"] or 0.0
    per_step = f"{seconds:.3g} s" if seconds >= 1 else f"{seconds * 1e3:.3g} ms"
    shares = ", ".join(f"{k} {v:.1%}" for k, v in report["shares"].items())
    return f"profile ({span}, {per_step}/step): {shares}"


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """The top operators by self time and the phases' shares, on stderr (as the summary)."""
    console = console or StderrConsole(highlight=False)
    key = "self_device_seconds" if report["sort_by"] == "self_device_time_total" else None
    table = Table(
        title=f"top operators by self {'device' if key else 'CPU'} time", title_justify="left"
    )
    table.add_column("operator")
    table.add_column("calls", justify="right")
    table.add_column("self CPU ms", justify="right")
    if key:
        table.add_column("self device ms", justify="right")
    for op in report["top_ops"][:PRINTED_OPS]:
        # Text: an operator's name is not rich markup.
        cells: list[str | Text] = [Text(op["name"]), str(op["count"])]
        cells.append(f"{op['self_cpu_seconds'] * 1e3:.3f}")
        if key:
            cells.append(f"{op[key] * 1e3:.3f}")
        table.add_row(*cells)
    console.print(table)
    console.print(shares_line(report), markup=False, soft_wrap=True)
    console.print(f"trace: {report['trace']} (ui.perfetto.dev)", markup=False)
