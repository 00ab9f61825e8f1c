"""Callbacks, as in Keras: History, ProgressLogger, EarlyStopping, ModelCheckpoint,
TerminateOnNaN, LearningRateScheduler and ReduceLROnPlateau. The three that watch a
logged value share ``MonitorCallback``'s test of what counts as an improvement."""
from __future__ import annotations

import math
import os

from . import metrics as metrics_mod
from .utils.files import MODEL_SUFFIXES, check_output_directory, check_suffix
from .utils.progress import ProgressDisplay
from .utils.validation import (check_bool, check_choice, check_nonnegative_int,
                               check_number_in, check_positive_number)


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
        self._listen()

    def _listen(self):
        # Per-batch logs cost a read of the running loss; only pay it when someone listens
        # (a progress display drawing no bar does not).
        self.batch_listeners = [c for c in self.callbacks
                                if type(c).on_train_batch_end is not Callback.on_train_batch_end
                                and getattr(c, "wants_batch_logs", True)]
        self.wants_batch_logs = bool(self.batch_listeners)

    def on_train_begin(self):
        for c in self.callbacks:
            c.on_train_begin()
        self._listen()  # a display knows whether it draws once its training began

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
    otherwise. ``fit(verbose=...)`` adds one; the display is ``dnn.utils.progress``'s."""


class TerminateOnNaN(Callback):
    """Stop training at the first non-finite loss, with an error naming the epoch and
    step. ``fit`` adds one unless ``terminate_on_nan=False``. The check itself (the NaN
    guard, ``dnn.training.nan_guard``) runs inside the training step, before the
    optimizer update, so the bad step never touches the weights; with
    ``restore_weights`` (the default) weights that an earlier step left non-finite
    (a finite loss with an infinite gradient) are rolled back to the start of the
    epoch."""

    def __init__(self, restore_weights=True):
        self.restore_weights = check_bool(restore_weights, "TerminateOnNaN: restore_weights")


class MonitorCallback(Callback):
    """A callback that watches one logged value: ``mode`` "min" or "max", or "auto"
    (the default), resolved as Keras 3 resolves it when training begins: the loss
    ("loss", "val_loss") is minimised, and a metric of the model's, found by the name
    monitored less its "val_" prefix, goes the way its ``direction`` says (accuracy,
    AUC, precision, recall "up"; mean absolute error "down"). Where the model has no
    such metric (a callback driven by hand), the metric class dnn has by that name
    decides, else a name with "acc" and no "loss" in it is maximised and anything else
    minimised. ``_is_improvement`` counts a change of more than ``min_delta``."""

    def __init__(self, monitor, mode="auto", min_delta=0.0):
        owner = type(self).__name__
        self.mode = check_choice(mode, f"{owner}: mode", ("auto", "min", "max"))
        self.monitor = monitor
        # Keras takes the size of min_delta whatever its sign.
        self.min_delta = abs(check_number_in(min_delta, f"{owner}: min_delta", -math.inf,
                                             math.inf))
        self.best = None
        self._direction = None  # "min" or "max", once resolved

    @property
    def direction(self):
        """"min" or "max": ``mode``, or what "auto" resolves to for the model."""
        if self._direction is None:
            self._direction = self._resolve_mode()
        return self._direction

    def set_model(self, model):
        super().set_model(model)
        self._direction = None  # another model may have other metrics by that name

    def _resolve_mode(self):
        if self.mode != "auto":
            return self.mode
        name = self.monitor[len("val_"):] if self.monitor.startswith("val_") else self.monitor
        model = getattr(self, "model", None)
        loss = getattr(model, "loss", None)
        if name == "loss" or name == getattr(loss, "name", None):
            return "min"
        for metric in getattr(model, "metrics", None) or ():
            if metric.name == name and metric.direction is not None:
                return "max" if metric.direction == "up" else "min"
        direction = metrics_mod.direction_of(name)
        if direction is not None:
            return "max" if direction == "up" else "min"
        return "max" if "acc" in name and "loss" not in name else "min"

    def _reset_best(self, baseline=None):
        self.best = baseline if baseline is not None else (
            math.inf if self.direction == "min" else -math.inf)

    def _is_improvement(self, value, reference):
        if reference is None:  # nothing to beat yet (as Keras)
            return True
        if self.direction == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def _monitored(self, logs):
        """The monitored value of this epoch's logs."""
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"{type(self).__name__}: monitor: expected one of "
                             f"{sorted(logs)}; got {self.monitor!r}")
        return logs[self.monitor]


class EarlyStopping(MonitorCallback):
    """Keras 3's ``EarlyStopping(monitor="val_loss", min_delta=0.0, patience=0,
    verbose=0, mode="auto", baseline=None, restore_best_weights=False,
    start_from_epoch=0)``: stop once ``monitor`` has gone ``patience`` epochs without
    improving by ``min_delta`` (never at the first epoch); epochs before
    ``start_from_epoch`` are not watched. With a ``baseline``, an improvement resets
    the count only when it also beats the baseline. With ``restore_best_weights`` the
    weights of the best epoch are restored when training ends, stopped early or not.
    As in Keras, an epoch with no improvement counts from the first watched epoch; the
    best value starts afresh at each fit."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0,
                 mode="auto", baseline=None, restore_best_weights=False,
                 start_from_epoch=0):
        super().__init__(monitor, mode, min_delta)
        self.patience = check_nonnegative_int(patience, "EarlyStopping: patience")
        self.verbose = verbose
        self.restore_best_weights = check_bool(restore_best_weights,
                                               "EarlyStopping: restore_best_weights")
        self.baseline = None if baseline is None else check_number_in(
            baseline, "EarlyStopping: baseline", -math.inf, math.inf)
        self.start_from_epoch = check_nonnegative_int(start_from_epoch,
                                                      "EarlyStopping: start_from_epoch")

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self._reset_best()
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        value = self._monitored(logs)
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if self._is_improvement(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        chief = self.model.replica.is_chief
        if self.stopped_epoch > 0 and self.verbose and chief:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose and chief:
                print(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(MonitorCallback):
    """Save the model after each epoch (atomically). ``filepath`` may use
    ``{epoch}`` and log names, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto"):
        super().__init__(monitor, mode)
        self.filepath = os.fspath(filepath)
        self.save_best_only = check_bool(save_best_only, "ModelCheckpoint: save_best_only")

    def on_train_begin(self, logs=None):
        # Fail now, not after the first epoch: the suffix, the model in that format (a
        # .keras archive needs h5py and layers Keras has), and a file really created and
        # removed in the directory (unless the directory itself is a template).
        what = "ModelCheckpoint: filepath"
        check_suffix(self.filepath, MODEL_SUFFIXES, what)
        self.model.check_saveable(self.filepath, what)
        if "{" not in os.path.dirname(self.filepath):
            check_output_directory(self.filepath, what)
        if self.best is None:  # the best so far is kept from one fit to the next
            self._reset_best()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = self._monitored(logs)
            if not self._is_improvement(value, self.best):
                return
            self.best = value
        self.model.save(self.filepath.format(epoch=epoch + 1, **logs))


def _numeric_learning_rate(owner, optimizer):
    """The optimizer's learning rate, which ``owner`` changes: a number, not a schedule."""
    if optimizer.scheduled:
        raise ValueError(f"{owner}: the optimizer's learning_rate: expected a number it can "
                         f"change; got {type(optimizer.learning_rate).__name__}")
    return optimizer.learning_rate


class LearningRateScheduler(Callback):
    """``schedule(epoch, lr) -> new lr``, applied at the start of each epoch."""

    def __init__(self, schedule, verbose=0):
        self.schedule = schedule
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        _numeric_learning_rate("LearningRateScheduler", self.model.optimizer)

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        lr = self.schedule(epoch, optimizer.learning_rate)
        try:
            optimizer.learning_rate = check_positive_number(lr, "learning_rate")
        except ValueError:
            raise ValueError(f"LearningRateScheduler: schedule({epoch}, ...) must return a "
                             f"finite number > 0; got {lr!r}") from None
        if self.verbose and self.model.replica.is_chief:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr:g}.")


class ReduceLROnPlateau(MonitorCallback):
    """Keras' ``ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=10,
    verbose=0, mode="auto", min_delta=1e-4, cooldown=0, min_lr=0.0)``: when ``monitor``
    has not improved by ``min_delta`` for ``patience`` epochs, multiply the learning rate
    by ``factor`` (not below ``min_lr``), then wait ``cooldown`` epochs before watching
    again. The new rate is written to device memory: a captured step keeps running."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        owner = "ReduceLROnPlateau"
        super().__init__(monitor, mode, min_delta)
        self.factor = check_number_in(factor, f"{owner}: factor", 0, 1, "()")
        self.patience = check_nonnegative_int(patience, f"{owner}: patience")
        self.verbose = verbose
        self.cooldown = check_nonnegative_int(cooldown, f"{owner}: cooldown")
        self.min_lr = check_positive_number(min_lr, f"{owner}: min_lr", allow_zero=True)
        self.wait = self.cooldown_left = None

    def on_train_begin(self, logs=None):
        _numeric_learning_rate("ReduceLROnPlateau", self.model.optimizer)
        self._reset_best()
        self.wait = self.cooldown_left = 0

    def on_epoch_end(self, epoch, logs=None):
        value = self._monitored(logs)
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if self._is_improvement(value, self.best):
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
                if self.verbose and self.model.replica.is_chief:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to "
                          f"{new:g}.")
            self.cooldown_left, self.wait = self.cooldown, 0
