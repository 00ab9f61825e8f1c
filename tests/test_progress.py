"""The progress display: every line fits the terminal, no rate before it is known."""
import fcntl
import io
import os
import re
import select
import struct
import termios
import time

import pytest
from support import popen

from dnn.callbacks import Callback, ProgressLogger
from dnn.utils.progress import ProgressDisplay, bar_line, epoch_lines

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MANY_LOGS = {name: 0.123456 for name in (
    "loss", "binary_accuracy", "precision", "recall", "auc", "mae", "val_loss",
    "val_binary_accuracy", "val_precision", "val_recall", "val_auc", "val_mae")}


def screen_lines(text):
    """What a terminal would show as separate lines: split on \\r and \\n, escapes gone."""
    return [ANSI.sub("", part) for part in re.split(r"[\r\n]", text)]


def test_progress_logger_is_the_display_as_a_callback():
    assert issubclass(ProgressLogger, Callback) and issubclass(ProgressLogger, ProgressDisplay)
    # fit's callback list only asks for batch logs from those that override the hook.
    assert ProgressLogger.on_train_batch_end is not Callback.on_train_batch_end


@pytest.mark.parametrize("columns", [40, 41, 50, 60, 72, 80, 100, 120, 160, 200])
def test_bar_lines_fit_every_width(columns):
    for steps in (1, 9, 29, 102, 12345):
        for step in sorted({1, steps // 2 or 1, steps}):
            for eta, rate in ((None, None), (3.2, 1234.5), (4000.0, 12345678.0)):
                line = bar_line(columns, step, steps, 0.123456, eta, rate)
                assert len(line) < columns, line
                assert line.startswith(f"{step:>{len(str(steps))}}/{steps}")
                assert "loss: 0.1235" in line
        for logs in ({"loss": 0.5}, {"loss": 0.5, "accuracy": 0.9}, MANY_LOGS):
            lines = epoch_lines(columns, steps, steps, 12.3, logs)
            assert all(len(line) < columns for line in lines), lines
            text = " ".join(lines)
            assert all(f"{name}: " in text for name in logs)  # wrapped, never dropped


def test_bar_gives_way_in_order_bar_then_rate_then_eta():
    wide = bar_line(200, 12, 29, 0.1234, 3.2, 1234.5)
    assert wide == ("12/29 [============>.................] - ETA 3s - 1,234 samples/s - "
                    "loss: 0.1234")
    assert len(wide) == 80
    for columns in (80, 70):  # the bar shrinks first
        shrunk = bar_line(columns, 12, 29, 0.1234, 3.2, 1234.5)
        assert len(shrunk) == columns - 1 and "ETA 3s - 1,234 samples/s" in shrunk
    assert bar_line(50, 12, 29, 0.1234, 3.2, 1234.5) == (
        "12/29 [=======>.........] - ETA 3s - loss: 0.1234")  # samples/s went first
    assert bar_line(40, 102, 102, 1.0, 100.0, 123.0) == "102/102 [==============] - loss: 1.0000"
    assert bar_line(21, 12, 29, 0.1234, 3.2, 1234.5) == "12/29 - loss: 0.1234"
    assert len(bar_line(10, 12, 29, 123456.0)) == 9  # cut at the width as a last resort


def test_epoch_line_shrinks_the_bar_to_stay_one_line_then_wraps_the_logs():
    lines = epoch_lines(80, 102, 102, 0.213, {"loss": 1.0986, "accuracy": 0.3333})
    assert lines == ["102/102 [===========================] - 213ms - loss: 1.0986 - "
                     "accuracy: 0.3333"]
    many = {"loss": 1.0986, "accuracy": 0.3333, "val_loss": 1.2, "val_accuracy": 0.25}
    assert epoch_lines(80, 102, 102, 0.213, many) == [
        "102/102 [==============================] - 213ms - loss: 1.0986",
        "        - accuracy: 0.3333 - val_loss: 1.2000 - val_accuracy: 0.2500"]
    assert epoch_lines(80, 29, 29, 0.012, {"loss": 0.1234, "accuracy": 0.9876}) == [
        "29/29 [==============================] - 12ms - loss: 0.1234 - accuracy: 0.9876"]
    narrow = epoch_lines(40, 29, 29, 0.012, {"loss": 0.1234, "accuracy": 0.9876})
    assert narrow == ["29/29 [=========] - 12ms - loss: 0.1234", "      - accuracy: 0.9876"]
    long_name = {"loss": 1.0, "val_sparse_top_k_categorical_accuracy": 0.5}
    assert all(len(line) < 40 for line in epoch_lines(40, 9, 9, 1.0, long_name))


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def run_epochs(logger, clock, steps=20, epochs=2, step_s=0.02, first_step_s=2.0,
               on_step=None, logs=None):
    """Drive ``logger`` as ``fit`` does: a slow first step (compilation), then even ones."""
    logger.set_params({"epochs": epochs, "steps": steps, "samples": steps * 32,
                       "batch_size": 32, "verbose": logger.verbose, "metrics": []})
    logger.on_train_begin()
    for epoch in range(epochs):
        logger.on_epoch_begin(epoch)
        for batch in range(steps):
            clock.now += first_step_s if batch == 0 else step_s
            if on_step:
                on_step(batch)
            logger.on_train_batch_end(batch, {"loss": 0.5, "seen": (batch + 1) * 32})
        logger.on_epoch_end(epoch, dict(logs or {"loss": 0.5, "accuracy": 0.75}))
    logger.on_train_end()


def test_no_rate_or_eta_until_it_is_measured(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    out, clock = FakeTTY(), FakeClock()
    logger = ProgressLogger(stream=out)
    monkeypatch.setattr(logger, "clock", clock)
    run_epochs(logger, clock)
    epochs = out.getvalue().split("Epoch ")[1:]
    assert len(epochs) == 2
    for chunk in epochs:
        refreshes = [r for r in chunk.split("\r")[1:] if r]
        assert "ETA" not in refreshes[0] and "samples/s" not in refreshes[0], refreshes[0]
        assert refreshes[0].startswith(" 1/20 [=>...")
        # Measured from the end of the 2 s first step: 32 samples per 0.02 s.
        assert any("1,600 samples/s" in r for r in refreshes), refreshes
        assert any("ETA 0s" in r for r in refreshes)
        assert not any("ETA 1" in r or "ETA 2" in r for r in refreshes)  # no warm-up in it
        # Each refresh rewrites the line from its start and clears what is left of it.
        assert all(r.endswith("\x1b[K") or r.endswith("\x1b[K\n") for r in refreshes[:-1])


def test_rate_waits_for_a_minimal_time(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    out, clock = FakeTTY(), FakeClock()
    logger = ProgressLogger(stream=out)
    logger.REFRESH_S = 0.0  # draw at every step, to see each one
    monkeypatch.setattr(logger, "clock", clock)
    run_epochs(logger, clock, steps=8, epochs=1, step_s=0.03)
    refreshes = [r for r in out.getvalue().split("\r") if r.startswith(" ") or r[:1].isdigit()]
    with_rate = [r.split(" [")[0].strip() for r in refreshes if "samples/s" in r]
    assert with_rate[0] == "5/8"  # 4 steps of 0.03 s after step 1: the first >= 0.1 s


def test_lines_follow_a_resize(monkeypatch):
    out, clock = FakeTTY(), FakeClock()
    logger = ProgressLogger(stream=out)
    logger.REFRESH_S = 0.0  # draw at every step
    monkeypatch.setattr(logger, "clock", clock)
    widths = {0: 200, 10: 40}

    def resize(batch):
        if batch in widths:
            monkeypatch.setenv("COLUMNS", str(widths[batch]))

    run_epochs(logger, clock, steps=20, epochs=1, on_step=resize, logs=MANY_LOGS)
    lines = [line for line in screen_lines(out.getvalue()) if line]
    assert max(len(line) for line in lines) > 60  # wide while the terminal was wide
    after = out.getvalue().split("11/20")[1]  # the first draw after the resize
    assert all(len(line) < 40 for line in screen_lines(after))


@pytest.mark.parametrize("columns", [40, 80, 200])
def test_logger_output_fits_with_many_metrics(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    out, clock = FakeTTY(), FakeClock()
    logger = ProgressLogger(stream=out)
    monkeypatch.setattr(logger, "clock", clock)
    run_epochs(logger, clock, logs=MANY_LOGS)
    lines = screen_lines(out.getvalue())
    assert all(len(line) < columns for line in lines), max(lines, key=len)
    assert out.getvalue().count("val_auc: 0.1235") == 2


def test_one_line_per_epoch_off_a_terminal():
    out, clock = io.StringIO(), FakeClock()
    logger = ProgressLogger(stream=out)
    logger.clock = clock
    run_epochs(logger, clock, steps=5, epochs=2, logs=MANY_LOGS)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[0].startswith("Epoch 1/2 - 2s - loss: 0.1235 - binary_accuracy: 0.1235")
    assert lines[1].endswith("val_auc: 0.1235 - val_mae: 0.1235")  # not cut: not a TTY


def test_verbose_2_on_a_terminal_wraps(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    out, clock = FakeTTY(), FakeClock()
    logger = ProgressLogger(verbose=2, stream=out)
    logger.clock = clock
    run_epochs(logger, clock, steps=5, epochs=2, logs=MANY_LOGS)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Epoch 1/2 - 2s - loss: 0.1235" and "\r" not in out.getvalue()
    assert all(len(line) < 40 for line in lines) and len(lines) > 4


def test_a_bar_cut_short_is_ended(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = FakeTTY()
    logger = ProgressLogger(stream=out)
    logger.set_params({"epochs": 1, "steps": 10, "samples": 320, "batch_size": 32})
    logger.on_train_begin()
    logger.on_epoch_begin(0)
    logger.on_train_batch_end(0, {"loss": 0.5, "seen": 32})
    logger.on_train_end()  # as after an error mid-epoch
    assert out.getvalue().endswith("\x1b[K\n")


CHILD = """
import time
import dnn
from dnn.layers import Dense

class Slow(dnn.callbacks.Callback):  # epochs long enough for a measured rate and ETA
    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.01)

x, y = dnn.data.make_circles(900, seed=0)
with dnn.use_backend("numpy"):
    model = dnn.Sequential([Dense(8, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=0)
    model.compile(loss="binary_crossentropy", optimizer="adam",
                  metrics=["binary_accuracy", "precision", "recall", "auc", "mae"])
    model.fit(x, y, epochs=2, batch_size=32, validation_split=0.1, callbacks=[Slow()])
print("done")
"""


def run_on_terminal(columns, rows=24):
    """Run a real ``fit`` with its output on a pseudo-terminal of the given size; returns
    everything it wrote."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = popen("-c", CHILD, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text
    assert text.rstrip().endswith("done"), text
    return text


@pytest.mark.parametrize("columns", [80, 40])
def test_bar_fits_a_real_terminal(monkeypatch, columns):
    # The size must come from the terminal itself, not from the environment.
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)
    text = run_on_terminal(columns)
    lines = screen_lines(text)
    assert all(len(line) <= columns for line in lines), max(lines, key=len)
    assert "Epoch 1/2" in text and "Epoch 2/2" in text and "val_mae: " in text
    for chunk in text.split("Epoch ")[1:]:
        first = [r for r in chunk.split("\r")[1:] if r.strip()][0]
        assert "ETA" not in first and "samples/s" not in first, first
        assert re.match(r" 1/26 \[", ANSI.sub("", first)), first
    assert "ETA" in text  # measured once the epoch is under way
    if columns == 80:
        assert "samples/s" in text


def test_a_display_that_draws_no_bar_asks_for_no_batch_logs():
    """Batch logs cost a read of the running loss: one line per epoch needs none."""
    import io

    import numpy

    import dnn
    from dnn.callbacks import CallbackList, ProgressLogger

    model = dnn.Sequential([dnn.layers.Dense(1)], input_dim=2, seed=0)
    params = {"epochs": 1, "steps": 2, "samples": 4, "batch_size": 2, "verbose": 2,
              "metrics": ["loss"]}
    quiet = CallbackList([ProgressLogger(verbose=2, stream=io.StringIO())], model, params)
    quiet.on_train_begin()
    assert not quiet.wants_batch_logs
    model.compile(loss="mse", optimizer="sgd")
    reads = []
    be = model.backend
    to_float = be.to_float
    x, y = numpy.ones((8, 2)), numpy.ones((8, 1))
    import unittest.mock

    with unittest.mock.patch.object(type(be), "to_float",
                                    lambda self, v: reads.append(1) or to_float(v)):
        model.fit(x, y, epochs=1, batch_size=2, verbose=2, terminate_on_nan=False)
    assert not reads  # no per-step loss read for a display that prints one line
