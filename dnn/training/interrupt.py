"""Ctrl-C during ``fit``: the first one asks training to stop after the current step
(``fit`` then returns the History so far, with ``history.interrupted`` set); a second
one interrupts at once."""
from __future__ import annotations

import signal
import sys
import threading


class StopOnInterrupt:
    """Context manager around the epoch loop. Only the main thread can take signals;
    elsewhere it does nothing."""

    def __init__(self, model):
        self.model = model
        self.previous = None

    def _handler(self, signum, frame):
        if self.model.history.interrupted:
            signal.signal(signal.SIGINT, self.previous)
            raise KeyboardInterrupt
        self.model.history.interrupted = True
        self.model.stop_training = True
        print("\nInterrupted: stopping after the current step (Ctrl-C again to abort now)",
              file=sys.stderr)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False
