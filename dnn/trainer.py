"""The training loop, apart from the model (the shape of Keras 3's ``Trainer``).

``Trainer`` drives a compiled ``Sequential``: epochs, shuffled batches gathered on the
device, the training step (forward, loss, backward, update) run eagerly or replayed from
a captured graph, the NaN guard, callbacks and validation, and the evaluation loop. The
model keeps the structure, the weights and the math of one step.

The shuffle order of epoch ``e`` is a function of ``(seed, e)`` and dropout masks of
``(seed, layer, step)``, so a run can be resumed exactly.
"""
from __future__ import annotations

import functools

import numpy

from . import data_adapter
from .callbacks import CallbackList, History, ProgressLogger, TerminateOnNaN
from .captured_steps import CapturedSteps
from .interrupt import StopOnInterrupt
from .nan_guard import NanGuard
from .validation import check_nonnegative_int, check_positive_int


class Trainer:
    """The training machinery of one compiled, built model."""

    def __init__(self, model):
        self.model = model
        self.backend = model.backend
        self.nan_guard = NanGuard(model)
        self.captured = CapturedSteps(model)
        self._loss_sum = None  # (1,) device buffer: the epoch's running sum of loss * rows
        self._position = [0, 0, 0]  # (epoch, step, steps) of the step running now

    # ------------------------------------------------------------------------ fit
    def fit(self, x, y, epochs=1, batch_size=32, validation_split=0.0, validation_data=None,
            shuffle=True, verbose=1, callbacks=None, initial_epoch=0, terminate_on_nan=True,
            cuda_graph="auto"):
        """See ``Sequential.fit``; ``x`` and ``y`` are checked device arrays."""
        model, be = self.model, self.backend
        epochs = check_nonnegative_int(epochs, "epochs")
        batch_size = check_positive_int(batch_size, "batch_size")
        initial_epoch = check_nonnegative_int(initial_epoch, "initial_epoch")
        if verbose not in (0, 1, 2, "auto"):
            raise ValueError(f"verbose: expected 0, 1, 2 or 'auto'; got {verbose!r}")
        if not (isinstance(validation_split, (int, float)) and 0 <= validation_split < 1):
            raise ValueError(f"validation_split: expected a number in [0, 1); "
                             f"got {validation_split!r}")
        if cuda_graph not in ("auto", True, False):
            raise ValueError(f"cuda_graph: expected 'auto', True or False; got {cuda_graph!r}")
        if cuda_graph is True and be.supports_graphs and model.optimizer.clipnorm is not None:
            raise ValueError("cuda_graph: expected 'auto' or False with clipnorm (the global "
                             "norm needs temporaries a captured graph cannot own); got True")
        x, y, val = data_adapter.split_validation(model, x, y, validation_split,
                                                  validation_data)
        n = x.shape[0]
        steps = -(-n // batch_size)

        cbs = list(callbacks or [])
        if terminate_on_nan and not any(isinstance(c, TerminateOnNaN) for c in cbs):
            cbs.append(TerminateOnNaN())
        nan_guard = any(isinstance(c, TerminateOnNaN) for c in cbs)
        model.history = History()
        cbs.insert(0, model.history)
        if verbose:
            cbs.append(ProgressLogger(verbose=verbose))
        cb = CallbackList(cbs, model=model, params={
            "epochs": epochs, "steps": steps, "samples": n, "batch_size": batch_size,
            "verbose": verbose, "metrics": self._log_names(val is not None)})
        model.stop_training = False
        use_graph = cuda_graph is True or (
            cuda_graph == "auto" and be.supports_graphs and model.optimizer.clipnorm is None)
        self.captured.fallback = cuda_graph == "auto"
        cb.on_train_begin()
        try:
            with StopOnInterrupt(model):
                for epoch in range(initial_epoch, epochs):
                    cb.on_epoch_begin(epoch)
                    logs, complete = self._run_epoch(x, y, batch_size, epoch, shuffle,
                                                     nan_guard, cb, use_graph)
                    if val is not None:
                        val_logs = self.evaluate(*val, max(batch_size, 256))
                        logs.update({"val_" + k: v for k, v in val_logs.items()})
                    if complete:  # a partial epoch is not resumable as done
                        model.epochs_done = epoch + 1
                    cb.on_epoch_end(epoch, logs)
                    if model.stop_training:
                        break
        finally:
            cb.on_train_end()
        return model.history

    def _log_names(self, with_val):
        names = ["loss"] + [m.name for m in self.model.metrics]
        return names + ["val_" + k for k in names] if with_val else names

    def _run_epoch(self, x_dev, y_dev, batch_size, epoch, shuffle, nan_guard, cb, use_graph):
        """One epoch. Reads the device only where it must: the loss once at the end, plus
        at progress points when a callback wants per-batch logs (and the NaN guard's
        flag at those same points). With ``use_graph``, full batches replay a captured
        step; the last partial batch runs eagerly. Returns ``(logs, complete)``."""
        model, be = self.model, self.backend
        n = x_dev.shape[0]
        steps = -(-n // batch_size)
        order = None
        if shuffle:
            order = be.asarray(numpy.random.default_rng([model.seed, epoch]).permutation(n))
        metric_sums = [0.0] * len(model.metrics)
        guard = self.nan_guard if nan_guard else None
        flags = guard.begin_epoch() if guard else None
        host_check = guard is not None and guard.on_host
        loss_sum = self._zeroed_loss_sum()
        every = 1 if be.cheap_host_reads else max(1, steps // 20)
        seen = n
        for step in range(steps):
            start, stop = step * batch_size, min(n, (step + 1) * batch_size)
            xb, yb = self._gather(x_dev, y_dev, order, start, stop)
            self._position[:] = epoch, step, steps
            # Bound now: a replayed step keeps the buffers it was captured with.
            train_step = functools.partial(self._train_step, xb, yb, flags, loss_sum,
                                           host_check)
            if use_graph and stop - start == batch_size:
                out = self.captured.run(batch_size, train_step)
            else:
                out = train_step()
            metric_sums = [a + b for a, b in zip(metric_sums, model.metric_sums(out, yb))]
            model.train_steps += 1
            if cb.wants_batch_logs and (step % every == every - 1 or step == steps - 1):
                if flags is not None:
                    guard.check_flags(epoch, steps)
                cb.on_train_batch_end(step, {"loss": be.to_float(loss_sum[0]) / stop,
                                             "seen": stop})
            if model.stop_training:
                seen = stop
                break
        if flags is not None:
            guard.check_flags(epoch, steps)
        return model.logs(be.to_float(loss_sum[0]), metric_sums, seen), seen == n

    def _gather(self, x_dev, y_dev, order, start, stop):
        """The batch ``[start, stop)`` of the epoch's order, copied into the fixed batch
        buffers of this size (a captured step reads them)."""
        be, rows = self.backend, stop - start
        key = ("batch", x_dev.shape[1:], x_dev.dtype, y_dev.shape[1:], y_dev.dtype)
        xb, yb = self.model.buffers.get(rows, key, lambda r: (
            be.empty((r,) + tuple(x_dev.shape[1:]), x_dev.dtype),
            be.empty((r,) + tuple(y_dev.shape[1:]), y_dev.dtype)))
        if order is None:
            be.copy(x_dev[start:stop], out=xb)
            be.copy(y_dev[start:stop], out=yb)
        else:
            idx = order[start:stop]
            be.take_rows(x_dev, idx, out=xb)
            be.take_rows(y_dev, idx, out=yb)
        return xb, yb

    def _train_step(self, xb, yb, flags, loss_sum, host_check):
        """Forward, loss, backward, update, and ``loss_sum += loss * rows``, all on the
        device. ``host_check`` asks for the host-side non-finite check before the
        update; ``flags`` for the device-side one. Returns the output."""
        model, be, optimizer = self.model, self.backend, self.model.optimizer
        out, loss = model.loss_and_backward(xb, yb, training=True, step=optimizer.iterations)
        if host_check:
            self.nan_guard.check_loss(loss, *self._position)
        skip = self.nan_guard.guard(loss, flags) if flags is not None else None
        optimizer.apply_gradients(model.flat_params, model.flat_grads, skip=skip)
        model.refresh_compute_weights()
        be.accumulate(loss_sum, loss, xb.shape[0])
        return out

    def _zeroed_loss_sum(self):
        if self._loss_sum is None:
            self._loss_sum = self.backend.zeros((1,), self.model.dtype)
        self.backend.fill(self._loss_sum, 0)
        return self._loss_sum

    # ------------------------------------------------------------------- evaluate
    def evaluate(self, x_dev, y_dev, batch_size):
        """Mean loss and metrics over device arrays, in batches of ``batch_size``."""
        model = self.model
        n = x_dev.shape[0]
        loss_sum = 0.0
        metric_sums = [0.0] * len(model.metrics)
        for start in range(0, n, batch_size):
            xb, yb = x_dev[start:start + batch_size], y_dev[start:start + batch_size]
            out, loss, _ = model.output_and_loss(xb, yb)
            loss_sum = loss_sum + loss * xb.shape[0]
            metric_sums = [a + b for a, b in zip(metric_sums, model.metric_sums(out, yb))]
        return model.logs(self.backend.to_float(loss_sum), metric_sums, n)
