"""Stopping cleanly when asked: SIGTERM (preemption, `kill`, schedulers) or SIGINT (Ctrl-C).

While `fit` trains, a signal only sets a flag; the loop finishes the step it is
in, saves a checkpoint and exits 0 (a second Ctrl-C interrupts at once).
With several processes they must all stop at the same step: SIGTERM then goes
through the runtime's own preemption notice (`jax.distributed` listens for it
and `multihost_utils.reached_preemption_sync_point` agrees on a step), and
Ctrl-C keeps its default meaning.
"""

from __future__ import annotations

import signal
import threading

import jax
from jax.experimental import multihost_utils


class StopRequests:
    """Context manager: `requested(step)` is the signal's name once one has arrived, else None."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal_name == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user means it
        self.signal_name = signal.Signals(signum).name
        print(f"\n{self.signal_name}: finishing this step, then saving a checkpoint...", flush=True)

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            signals = [signal.SIGTERM, signal.SIGINT] if jax.process_count() == 1 else []
            for s in signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def requested(self, step: int) -> str | None:
        if jax.process_count() > 1 and multihost_utils.reached_preemption_sync_point(step):
            self.signal_name = "SIGTERM"
        return self.signal_name
