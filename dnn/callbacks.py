"""Callbacks, as in Keras: History, ProgressLogger, EarlyStopping, ModelCheckpoint,
TerminateOnNaN, LearningRateScheduler and ReduceLROnPlateau."""
from __future__ import annotations

import math
import os

from .files import check_output_directory
from .validation import check_nonnegative_int
from .progress import ProgressDisplay


def _mode(owner, mode, monitor):
    """"min" or "max" for a monitored value; "auto": "max" for accuracies (Keras)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode: expected 'auto', 'min' or 'max'; got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor and "loss" not in monitor else "min"
    return mode


def _says(model):
    """Whether this process prints a callback's messages: data-parallel, rank 0 alone."""
    replica = getattr(model, "replica", None)
    return replica is None or replica.rank == 0


class Callback:
    """Hooks called by ``fit``. ``self.model`` and ``self.params`` are set first."""

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass


class CallbackList:
    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for c in self.callbacks:
            if not isinstance(c, Callback):
                raise TypeError(f"callbacks: expected dnn.callbacks.Callback instances; "
                                f"got {type(c).__name__}")
            c.set_model(model)
            c.set_params(params)
        # Per-batch logs cost a read of the running loss; only pay it when someone listens.
        self.batch_listeners = [c for c in self.callbacks
                                if type(c).on_train_batch_end is not Callback.on_train_batch_end]
        self.wants_batch_logs = bool(self.batch_listeners)

    def on_train_begin(self):
        for c in self.callbacks:
            c.on_train_begin()

    def on_train_end(self):
        for c in self.callbacks:
            c.on_train_end()

    def on_epoch_begin(self, epoch):
        for c in self.callbacks:
            c.on_epoch_begin(epoch)

    def on_epoch_end(self, epoch, logs):
        for c in self.callbacks:
            c.on_epoch_end(epoch, logs)

    def on_train_batch_end(self, batch, logs):
        for c in self.batch_listeners:
            c.on_train_batch_end(batch, logs)


class History(Callback):
    """``history.history``: per-epoch lists keyed by log name; ``history.epoch``;
    ``history.interrupted``: whether Ctrl-C ended the fit."""

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.interrupted = False

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


class ProgressLogger(ProgressDisplay, Callback):
    """Keras-style progress: a bar on a terminal (verbose=1), one line per epoch
    otherwise. ``fit(verbose=...)`` adds one; the display is ``dnn.progress``'s."""


class TerminateOnNaN(Callback):
    """Stop training at the first non-finite loss, with an error naming the epoch and
    step. ``fit`` adds one unless ``terminate_on_nan=False``; the check itself runs
    inside the training step, before the optimizer update, so the bad step never
    touches the weights."""


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs;
    optionally restore the best weights."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 restore_best_weights=False, baseline=None):
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = check_nonnegative_int(patience, "EarlyStopping: patience")
        self.mode = _mode("EarlyStopping", mode, monitor)
        self.restore_best_weights = restore_best_weights
        self.baseline = baseline

    def _better(self, value, best):
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = None
        self.best = self.baseline if self.baseline is not None else (
            math.inf if self.mode == "min" else -math.inf)
        self.best_weights = None
        self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping: monitor: expected one of {sorted(logs)}; "
                             f"got {self.monitor!r}")
        value = logs[self.monitor]
        if self._better(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model after each epoch (atomically). ``filepath`` may use
    ``{epoch}`` and log names, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto"):
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.mode = _mode("ModelCheckpoint", mode, monitor)
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_train_begin(self, logs=None):
        # Fail now, not after the first epoch (unless the directory itself is a template).
        if "{" not in os.path.dirname(self.filepath):
            check_output_directory(self.filepath, "ModelCheckpoint: filepath")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            if self.monitor not in logs:
                raise ValueError(f"ModelCheckpoint: monitor: expected one of {sorted(logs)}; "
                                 f"got {self.monitor!r}")
            value = logs[self.monitor]
            improved = value < self.best if self.mode == "min" else value > self.best
            if not improved:
                return
            self.best = value
        self.model.save(self.filepath.format(epoch=epoch + 1, **logs))


class LearningRateScheduler(Callback):
    """``schedule(epoch, lr) -> new lr``, applied at the start of each epoch."""

    def __init__(self, schedule, verbose=0):
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        lr = self.schedule(epoch, optimizer.learning_rate)
        if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"LearningRateScheduler: schedule({epoch}, ...) must return a "
                             f"finite number > 0; got {lr!r}")
        optimizer.learning_rate = float(lr)
        if self.verbose and _says(self.model):
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr:g}.")


class ReduceLROnPlateau(Callback):
    """Keras' ``ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=10,
    verbose=0, mode="auto", min_delta=1e-4, cooldown=0, min_lr=0.0)``: when ``monitor``
    has not improved by ``min_delta`` for ``patience`` epochs, multiply the learning rate
    by ``factor`` (not below ``min_lr``), then wait ``cooldown`` epochs before watching
    again. The new rate is written to device memory: a captured step keeps running."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        if not isinstance(factor, (int, float)) or not 0 < factor < 1:
            raise ValueError(f"ReduceLROnPlateau: factor: expected a number in (0, 1); got "
                             f"{factor!r}")
        owner = "ReduceLROnPlateau"
        self.monitor, self.factor = monitor, float(factor)
        self.patience = check_nonnegative_int(patience, f"{owner}: patience")
        self.verbose, self.min_delta = verbose, abs(float(min_delta))
        self.cooldown = check_nonnegative_int(cooldown, f"{owner}: cooldown")
        self.min_lr = float(min_lr)
        self.mode = _mode(owner, mode, monitor)
        self.best = self.wait = self.cooldown_left = None

    def on_train_begin(self, logs=None):
        schedule = self.model.optimizer.schedule
        if schedule is not None:
            raise ValueError(f"ReduceLROnPlateau: the optimizer's learning_rate: expected a "
                             f"number it can lower; got {type(schedule).__name__}")
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = self.cooldown_left = 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"ReduceLROnPlateau: monitor: expected one of {sorted(logs)}; "
                             f"got {self.monitor!r}")
        value = logs[self.monitor]
        better = value < self.best - self.min_delta if self.mode == "min" else \
            value > self.best + self.min_delta
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if better:
            self.best, self.wait = value, 0
            return
        if self.cooldown_left > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            optimizer = self.model.optimizer
            old = optimizer.learning_rate
            new = max(old * self.factor, self.min_lr)
            if new < old:
                optimizer.learning_rate = new
                if self.verbose and _says(self.model):
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to "
                          f"{new:g}.")
            self.cooldown_left, self.wait = self.cooldown, 0
