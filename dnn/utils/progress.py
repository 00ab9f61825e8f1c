"""The progress display of ``fit`` (``dnn.callbacks.ProgressLogger``): a Keras-style bar
on a terminal, one line per epoch elsewhere.

On a terminal every line is fitted to the width that ``shutil.get_terminal_size()``
reports at the moment it is drawn (so resizing the window is honoured), down to 40
columns and below: lines never overflow, because an overflowing line wraps and the next
``\\r`` refresh then leaves the wrapped part behind as a stale, cut-off line.
"""
from __future__ import annotations

import shutil
import sys
import time

BAR_WIDTH = 30  # the bar's width when the terminal has room
MIN_BAR_WIDTH = 6  # narrower than this, the bar says too little: drop fields instead
SHORT_BAR_WIDTH = 12  # the narrowest bar an epoch's last line shrinks to before wrapping


def format_duration(seconds):
    """``1:02:03``, ``1:46``, ``3s`` or ``850ms``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    if seconds >= 1:
        return f"{seconds:.0f}s"
    return f"{seconds * 1000:.0f}ms"


def format_eta(seconds):
    """Whole seconds, as Keras: ``0s``, ``3s``, ``1:46``, ``1:02:03``; a fraction of a
    second is not worth the columns."""
    seconds = max(round(seconds), 0)
    return f"{seconds}s" if seconds < 60 else format_duration(seconds)


def format_logs(logs):
    """``loss: 0.1234 - accuracy: 0.9876``."""
    return " - ".join(_log_items(logs))


def _log_items(logs):
    return [f"{k}: {format_value(v)}" for k, v in logs.items()]


def format_value(value):
    """A log value to 4 decimals; a metric of several thresholds as a list of them."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{v:.4f}" for v in value) + "]"
    return f"{value:.4f}"


def _usable(columns):
    # One column short of the width: a line that fills the last column leaves some
    # terminals' cursor on the next line, where the next "\r" would strand the line.
    return max(int(columns) - 1, 1)


def _counter(step, steps):
    # Padded to the total's width, as Keras does, so the bar does not jump at 10, 100...
    if steps is None:  # a batch source whose length is not known yet: Keras's form
        return f"{step}/Unknown"
    return f"{step:>{len(str(steps))}}/{steps}"


def _bar(width, done):
    """``=====>.....`` of ``width`` characters for the fraction ``done``."""
    filled = min(int(width * done), width)
    if filled >= width:
        return "=" * width
    return "=" * filled + ">" + "." * (width - filled - 1)


def bar_line(columns, step, steps, loss=None, eta=None, rate=None):
    """One refresh of the bar, at most ``columns - 1`` characters:
    ``12/29 [=====>.....] - ETA 3s - 1,234 samples/s - loss: 0.1234``.

    ``eta`` (seconds) and ``rate`` (samples/s) are None until they are known. When the
    line would not fit, the bar shrinks first (from 30 down to 6 characters), then
    samples/s is dropped, then the ETA, then the bar itself; the loss is the last to go
    (cut at the width). ``steps`` None (a batch source whose length is not known yet):
    ``12/Unknown - 1,234 samples/s - loss: 0.1234``, no bar and no ETA, as in Keras."""
    width = _usable(columns)
    counter = _counter(step, steps)
    tail = [] if loss is None else [f"loss: {loss:.4f}"]
    optional = [f"ETA {format_eta(eta)}" if eta is not None else None,
                f"{rate:,.0f} samples/s" if rate is not None else None]
    optional = [f for f in optional if f is not None]
    # The most complete line that fits: drop samples/s, then the ETA.
    for keep in range(len(optional), -1, -1):
        rest = "".join(" - " + f for f in optional[:keep] + tail)
        if steps is None and len(counter) + len(rest) <= width:  # no total: no bar
            return counter + rest
        room = width - len(counter) - len(" []") - len(rest)
        if room >= MIN_BAR_WIDTH and steps is not None:
            bar = _bar(min(room, BAR_WIDTH), step / steps if steps else 1.0)
            return f"{counter} [{bar}]{rest}"
    return (counter + "".join(" - " + f for f in tail))[:width]


def wrap_fields(columns, head, items, indent):
    """``head`` followed by `` - item`` for each item, as lines of at most ``columns - 1``
    characters: the items that do not fit go on continuation lines, ``indent`` spaces
    in and starting with ``- ``. An item too long for any line is cut into pieces."""
    width = _usable(columns)
    lines = [head[:width]]
    for item in items:
        if len(lines[-1]) + len(" - ") + len(item) <= width:
            lines[-1] += " - " + item
            continue
        lead = " " * min(indent, max(width - len(item) - 2, 0)) + "- "
        piece = lead + item
        while len(piece) > width:
            lines.append(piece[:width])
            piece = piece[width:]
        lines.append(piece)
    return lines


def epoch_lines(columns, step, steps, elapsed, logs):
    """The bar's last state for an epoch, ``29/29 [=====] - 12ms - loss: ...``, as lines
    of at most ``columns - 1`` characters: one line when the bar can shrink to 12
    characters or more and leave room for every log. Otherwise the first line keeps the
    bar at its full width where it can, shrinking it (to 6 characters, then dropping it)
    only as far as the counter, the bar, the time and the first log (the loss) need; the
    logs that do not fit after them wrap onto continuation lines aligned under the bar."""
    width = _usable(columns)
    counter = _counter(step, steps)
    items = _log_items(logs)
    time_text = f" - {format_duration(elapsed)}"
    # One line when a bar of SHORT_BAR_WIDTH or more leaves room for every log (loss
    # and accuracy at 80 columns, the common case), as Keras prints it.
    rest = time_text + "".join(" - " + item for item in items)
    room = width - len(counter) - len(" []") - len(rest)
    if room >= SHORT_BAR_WIDTH:
        return [f"{counter} [{_bar(min(room, BAR_WIDTH), 1.0)}]{rest}"]
    for first in (items[:1], []):
        rest = time_text + "".join(" - " + item for item in first)
        room = width - len(counter) - len(" []") - len(rest)
        if room >= MIN_BAR_WIDTH:
            head = f"{counter} [{_bar(min(room, BAR_WIDTH), 1.0)}]{rest}"
            return wrap_fields(columns, head, items[len(first):], len(counter) + 1)
    return wrap_fields(columns, counter + time_text, items, len(counter) + 1)


class ProgressDisplay:
    """Keras-style progress, written to ``stream`` (default: ``sys.stdout``), driven by
    ``fit``'s callback hooks; ``dnn.callbacks.ProgressLogger`` is this as a Callback.
    (It does not subclass Callback itself: dnn.callbacks imports this module, and an
    import back would make a cycle.)

    On a TTY with verbose=1: ``Epoch 3/50``, then a bar refreshed in place at most
    every 0.1 s, ``12/29 [=====>.....] - ETA 3s - 1,234 samples/s - loss: 0.1234``,
    and at the end of the epoch its final state with the time and all logs. Otherwise
    (not a TTY, or verbose=2): one line per epoch, ``Epoch 3/50 - 12ms - loss: ...``.

    On a TTY every line fits the terminal's current width (see ``bar_line`` for what
    gives way first); the end-of-epoch logs wrap onto continuation lines rather than
    overflow. Each refresh starts with ``\\r`` and ends with clear-to-end-of-line, so
    nothing of a longer previous line stays behind.

    samples/s and the ETA appear only once they mean something: the clock starts at
    the epoch's first progress point (so the first steps' compilation and warm-up are
    not counted), and the rate is shown once at least one more step and
    ``RATE_AFTER_S`` have passed since then."""

    REFRESH_S = 0.1
    RATE_AFTER_S = 0.1
    clock = staticmethod(time.perf_counter)  # a class attribute, so tests can fake time

    def __init__(self, verbose=1, stream=None):
        self.verbose = verbose
        self.stream = stream

    def on_train_begin(self, logs=None):
        # self.params ({"epochs", "steps", "samples", "batch_size", ...}) is set first,
        # by Callback.set_params.
        self.out = self.stream or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.bar = self.verbose in (1, "auto") and self.tty
        self.line_open = False  # a bar line is drawn and not yet ended by a newline

    @property
    def wants_batch_logs(self):
        """Whether batch logs are drawn (a bar on a terminal): without one, the loop need
        not read the running loss for it."""
        return getattr(self, "bar", True)

    def _columns(self):
        # Read at every draw, so that resizing the window takes effect at the next one.
        return shutil.get_terminal_size().columns

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = self.clock()
        self.last_draw = None
        self.batches = 0  # the last batch drawn
        self.rate_start = None  # (time, batch, seen) at the epoch's first progress point
        if self.bar:
            self.out.write(f"Epoch {epoch + 1}/{self.params['epochs']}\n")
            self.out.flush()

    def on_train_batch_end(self, batch, logs=None):
        if not self.bar:
            return
        logs = logs or {}
        now = self.clock()
        steps = self.params["steps"]
        seen = logs.get("seen")
        if seen is None:  # batch sources leave batch_size and samples None
            seen = min((batch + 1) * (self.params.get("batch_size") or 1),
                       self.params.get("samples") or batch + 1)
        eta = rate = None
        if self.rate_start is None:
            self.rate_start = (now, batch, seen)
        else:
            if self.last_draw is not None and now - self.last_draw < self.REFRESH_S \
                    and (steps is None or batch + 1 < steps):
                return
            start, start_batch, start_seen = self.rate_start
            if batch > start_batch and now - start >= self.RATE_AFTER_S:
                rate = (seen - start_seen) / (now - start)
                if steps is not None:
                    eta = (now - start) / (batch - start_batch) * (steps - 1 - batch)
        self.last_draw = now
        self.batches = batch + 1
        line = bar_line(self._columns(), batch + 1, steps, logs.get("loss"), eta, rate)
        self.out.write(f"\r{line}\x1b[K")
        self.out.flush()
        self.line_open = True

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        elapsed = self.clock() - self.epoch_start
        # Unknown only when an epoch of unknown length stopped early: what it ran.
        steps = self.params["steps"] or self.batches
        if self.bar:
            lines = epoch_lines(self._columns(), steps, steps, elapsed, logs)
            self.out.write("\r" + "\x1b[K\n".join(lines) + "\x1b[K\n")
        else:
            head = f"Epoch {epoch + 1}/{self.params['epochs']} - {format_duration(elapsed)}"
            if self.tty:  # verbose=2 on a terminal: the same line, wrapped to fit
                lines = wrap_fields(self._columns(), head, _log_items(logs), len("Epoch "))
                self.out.write("\n".join(lines) + "\n")
            else:
                self.out.write(" - ".join([head] + _log_items(logs)) + "\n")
        self.out.flush()
        self.line_open = False

    def on_train_end(self, logs=None):
        # An error or a stop mid-epoch leaves a bar line open: end it, so that what is
        # printed next starts on a line of its own.
        if self.line_open:
            self.out.write("\n")
            self.out.flush()
            self.line_open = False
