"""SIGTERM and SIGINT: finish the step, write a checkpoint, exit (0 for SIGTERM, 130 for SIGINT).

The handler only records the signal; the training loop reads the flag after each step. A
second identical signal gets the handler that was there before (SIGTERM's default kills,
SIGINT's raises KeyboardInterrupt), so an impatient user can still stop at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

EXIT_CODES = {signal.SIGTERM: 0, signal.SIGINT: 130}


class TrainingInterrupted(Exception):
    """The run stopped on a signal after writing a checkpoint; `exit_code` is for the CLI."""

    def __init__(self, signum: int, step: int, checkpoint: str) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = EXIT_CODES.get(signal.Signals(signum), 1)
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at step {step}; checkpoint {checkpoint}")


class StopSignals:
    """Context manager: while inside, SIGTERM/SIGINT only set `received`."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        signal.signal(signum, self._previous[signum])

    def __enter__(self) -> StopSignals:
        # Handlers can only be installed from the main thread (a tuner may train in others).
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
