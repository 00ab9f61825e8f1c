"""Ctrl-C during ``fit``: the first one asks training to stop after the current step
(``fit`` then returns the History so far, with ``history.interrupted`` set); a second
one interrupts at once. A process started with Ctrl-C ignored (a job that a shell script
starts with &) keeps ignoring it, as Python itself does."""
from __future__ import annotations

import signal
import sys
import threading


class StopOnInterrupt:
    """Context manager around the epoch loop. Only the main thread can take signals;
    elsewhere, and where SIGINT is ignored, it does nothing."""

    def __init__(self, model):
        self.model = model
        self.installed = False
        self.previous = None

    def _handler(self, signum, frame):
        if self.model.history.interrupted:
            signal.signal(signal.SIGINT, signal.SIG_DFL if self.previous is None
                          else self.previous)
            raise KeyboardInterrupt
        self.model.history.interrupted = True
        self.model.stop_training = True
        print("\nInterrupted: stopping after the current step (Ctrl-C again to abort now)",
              file=sys.stderr)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self.previous = signal.signal(signal.SIGINT, self._handler)
            self.installed = True
        return self

    def __exit__(self, *exc):
        if self.installed:
            # None: a handler not set from Python; the default is the closest there is.
            signal.signal(signal.SIGINT, signal.SIG_DFL if self.previous is None
                          else self.previous)
            self.installed = False
        return False
