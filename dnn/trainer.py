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

from . import data_adapter, step as step_math
from .callbacks import CallbackList, History, ProgressLogger, TerminateOnNaN
from .captured_steps import CapturedSteps
from .distributed import split_rows
from .interrupt import StopOnInterrupt
from .layers import Dropout
from .nan_guard import NanGuard
from .validation import check_nonnegative_int, check_positive_int


class Trainer:
    """The training machinery of one compiled, built model."""

    def __init__(self, model):
        self.model = model
        self.backend = model.backend
        self.nan_guard = NanGuard(model)
        self.captured = CapturedSteps(model)
        self._train_totals = _Totals(self.backend, model.metrics, model.dtype)
        self._eval_totals = _Totals(self.backend, model.metrics, model.dtype)
        self._order = None  # int64 (n,) device buffer: this epoch's sample order
        self._cursor = self.backend.zeros((1,), "int64")  # the next row of the order
        self._step_loss = self.backend.zeros((1,), model.dtype)  # data-parallel: global
        self._dropouts = [layer for layer in model.layers if isinstance(layer, Dropout)]
        self._position = [0, 0, 0]  # (epoch, step, steps) of the step running now

    # ------------------------------------------------------------------------ fit
    def fit(self, x, y, w=None, epochs=1, batch_size=32, validation_split=0.0,
            validation_data=None, shuffle=True, verbose=1, callbacks=None, initial_epoch=0,
            terminate_on_nan=True, cuda_graph="auto"):
        """See ``Sequential.fit``; ``x``, ``y`` and the sample weights ``w`` (or None)
        are checked device arrays."""
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
        x, y, w, val = data_adapter.split_validation(model, x, y, w, validation_split,
                                                     validation_data)
        n = x.shape[0]
        cbs = list(callbacks or [])
        if terminate_on_nan and not any(isinstance(c, TerminateOnNaN) for c in cbs):
            cbs.append(TerminateOnNaN())
        nan_guard = any(isinstance(c, TerminateOnNaN) for c in cbs)
        use_graph = cuda_graph is True or (
            cuda_graph == "auto" and be.supports_graphs and model.optimizer.clipnorm is None)
        parallel = self.parallel
        if parallel is not None:
            parallel.strategy.check_same(
                "fit", **{"rows of x": n, "batch_size": batch_size, "epochs": epochs,
                          "initial_epoch": initial_epoch, "shuffle": bool(shuffle),
                          "sample weights": w is not None,
                          "validation rows": 0 if val is None else val[0].shape[0],
                          "steps_per_execution": model.steps_per_execution,
                          "cuda_graph": {"auto": 2, True: 1, False: 0}[cuda_graph],
                          "terminate_on_nan": nan_guard})
            if be.supports_graphs and not parallel.collectives.capturable:
                if cuda_graph is True:
                    raise ValueError(f"cuda_graph: expected 'auto' or False with the "
                                     f"{parallel.collectives.name!r} communicator (its calls "
                                     f"run on the host, outside any CUDA graph); got True")
                use_graph = False
        steps = -(-n // (batch_size * self.world))
        model.history = History()
        cbs.insert(0, model.history)
        if verbose and (parallel is None or parallel.rank == 0):
            cbs.append(ProgressLogger(verbose=verbose))  # data-parallel: rank 0 reports
        cb = CallbackList(cbs, model=model, params={
            "epochs": epochs, "steps": steps, "samples": n, "batch_size": batch_size,
            "verbose": verbose, "metrics": self._log_names(val is not None)})
        model.stop_training = False
        self.captured.fallback = cuda_graph == "auto"
        cb.on_train_begin()
        try:
            # Overflow in a diverging run is the NaN guard's to report, with the epoch and
            # step and what to do; NumPy's RuntimeWarnings would only print before it.
            with StopOnInterrupt(model), numpy.errstate(over="ignore", invalid="ignore",
                                                        divide="ignore"):
                for epoch in range(initial_epoch, epochs):
                    cb.on_epoch_begin(epoch)
                    logs, complete = self._run_epoch(x, y, w, batch_size, epoch, shuffle,
                                                     nan_guard, cb, use_graph)
                    if val is not None:
                        val_logs = self.evaluate(*val, max(batch_size, 256))
                        logs.update({"val_" + k: v for k, v in val_logs.items()})
                    if complete:  # a partial epoch is not resumable as done
                        model.epochs_done = epoch + 1
                    cb.on_epoch_end(epoch, logs)
                    if parallel is not None:  # one rank's stop is every rank's
                        model.stop_training = parallel.strategy.any_rank(model.stop_training)
                    if model.stop_training:
                        break
        finally:
            self.captured.release_pins()  # multi-step graphs hold this call's data
            for layer in self._dropouts:
                layer.row_offset = 0  # a rank's place in fit's batches, not beyond them
            cb.on_train_end()
        return model.history

    def _log_names(self, with_val):
        names = ["loss"] + [m.name for m in self.model.metrics]
        return names + ["val_" + k for k in names] if with_val else names

    def _run_epoch(self, x_dev, y_dev, w_dev, batch_size, epoch, shuffle, nan_guard, cb,
                   use_graph):
        """One epoch. Reads the device only where it must: the loss and metric totals once
        at the end, plus the loss at progress points when a callback wants per-batch logs
        (and the NaN guard's flag at those same points).

        With ``use_graph``, full batches replay a captured step; with
        ``steps_per_execution`` K > 1 too, K steps replay as one graph that gathers its
        own batches from the epoch's order in device memory, so the host does nothing per
        step. The steps left over, and the last partial batch, run one at a time (the
        partial one eagerly). Data-parallel, the order is this rank's share of each
        global batch (``DataParallel.rank_order``), so all of this holds per rank.
        Returns ``(logs, complete)``."""
        model, be = self.model, self.backend
        parallel = self.parallel
        n = x_dev.shape[0]
        order, steps, last = self._epoch_order(n, epoch, shuffle, batch_size)
        rows = order.shape[0]  # this rank's rows in the epoch
        full = rows // batch_size if last is None else steps - 1
        guard = self.nan_guard if nan_guard else None
        flags = guard.begin_epoch() if guard else None
        host_check = guard is not None and guard.on_host
        totals = self._train_totals
        be.fill(totals.buffer, 0)
        every = 1 if be.cheap_host_reads else max(1, steps // 20)
        k = model.steps_per_execution if use_graph else 1
        chunks = full // k if k > 1 else 0
        step, seen = 0, n
        data = [a for a in (x_dev, y_dev, w_dev) if a is not None]
        share = self._share(batch_size, None)  # a full batch's (scale, row offset)
        last_share = share if last is None else self._share(batch_size, last)
        if chunks:
            be.fill(self._cursor, 0)
            batch = self._batch_buffers(data, batch_size)
            body = functools.partial(self._train_steps, k, data, order, batch, flags, totals,
                                     host_check, share)
        while step < steps:
            self._position[:] = epoch, step, steps
            if step < chunks * k:
                self.captured.run(batch_size, body, steps=k, pins=tuple(data))
                done = k
            else:
                start, stop = step * batch_size, min(rows, (step + 1) * batch_size)
                one_share = last_share if step == steps - 1 else share
                if stop > start:
                    batch = self._batch_buffers(data, stop - start)
                    for source, target in zip(data, batch):
                        be.take_rows(source, order[start:stop], out=target)
                    # Bound now: a replayed step keeps the buffers it was captured with.
                    one = functools.partial(self._train_step, batch, flags, totals,
                                            host_check, one_share)
                    # The last global batch never replays a full batch's graph: a rank
                    # may hold batch_size rows of it with another share and offset.
                    if use_graph and stop - start == batch_size and (
                            last is None or step < steps - 1):
                        self.captured.run(batch_size, one)
                    else:
                        one()
                else:  # a rank with no rows in the last, short global batch
                    self._empty_step(flags, host_check)
                done = 1
            step += done
            model.train_steps += done
            stop = min(n, step * batch_size * self.world)
            crossed = _crossed(step, done, every, steps)
            if crossed and (cb.wants_batch_logs or parallel):
                # Data-parallel, every rank checks the guard at the same steps, whatever
                # its callbacks, so that all stop together.
                if flags is not None:
                    guard.check_flags(epoch, steps)
                if cb.wants_batch_logs:
                    local = min(rows, step * batch_size)
                    cb.on_train_batch_end(step - 1, {
                        "loss": be.to_float(totals.loss[0]) / max(local, 1), "seen": stop})
            if parallel is not None:
                # A stop (a callback's, Ctrl-C's) is agreed at the progress points, so
                # that every rank leaves after the same step.
                if crossed and step < steps and parallel.strategy.any_rank(
                        model.stop_training):
                    model.stop_training = True
                    seen = stop
                    break
            elif model.stop_training:
                seen = stop
                break
        if flags is not None:
            guard.check_flags(epoch, steps)
        if parallel:
            parallel.reduce_totals(totals.buffer)
        return step_math.logs(model, totals.read(), seen), seen == n

    @property
    def parallel(self):
        """The model's ``dnn.distributed.Replica`` when training is data-parallel, else
        None."""
        replica = self.model.replica
        return replica if replica is not None and replica.parallel else None

    @property
    def world(self):
        return 1 if self.parallel is None else self.parallel.world_size

    def _share(self, batch_size, last):
        """``(scale, row offset)`` of this rank's batch within the global one: the
        factor on the loss gradient (its rows over the global batch's) and where its
        rows start (for the dropout mask). ``last``: the short global batch's ``(start,
        stop, rows)``, or None for a full one. ``(None, 0)`` without data parallelism."""
        parallel = self.parallel
        if parallel is None:
            return None, 0
        if last is None:
            return 1.0 / parallel.world_size, parallel.rank * batch_size
        start, stop, rows = last
        return (stop - start) / rows, start

    def _epoch_order(self, n, epoch, shuffle, batch_size):
        """The epoch's sample order (this rank's share of it when data-parallel), in a
        device buffer that lives as long as the trainer (a captured multi-step graph
        reads it). Returns ``(order, steps, last)`` (see ``DataParallel.rank_order``)."""
        order = numpy.random.default_rng([self.model.seed, epoch]).permutation(n) \
            if shuffle else numpy.arange(n)
        last = None
        if self.parallel is not None:
            order, steps, last = self.parallel.rank_order(order, batch_size)
        else:
            steps = -(-n // batch_size)
        if self._order is None or self._order.shape[0] != order.shape[0]:
            self._order = self.backend.empty((order.shape[0],), "int64")
            self.captured.release_pins()
        self.backend.copy(self.backend.asarray(order), out=self._order)
        return self._order, steps, last

    def _batch_buffers(self, data, rows):
        """The fixed batch buffers of ``rows`` rows for the arrays ``data`` (features,
        targets, and the sample weights if any): a captured step reads them."""
        be = self.backend
        key = ("batch",) + tuple((a.shape[1:], a.dtype) for a in data)
        return self.model.buffers.get(rows, key, lambda r: tuple(
            be.empty((r,) + tuple(a.shape[1:]), a.dtype) for a in data))

    def _train_steps(self, k, data, order, batch, flags, totals, host_check, share):
        """``k`` training steps, each gathering its batch at the cursor in device memory."""
        be = self.backend
        for _ in range(k):
            for source, target in zip(data, batch):
                be.gather_rows(source, order, self._cursor, out=target)
            be.advance(self._cursor, batch[0].shape[0])
            self._train_step(batch, flags, totals, host_check, share)
            self._position[1] += 1  # for the host check's message (a re-run, not a graph)

    def _train_step(self, batch, flags, totals, host_check, share=(None, 0)):
        """Forward, loss, backward, update, and the batch's loss and metrics added to the
        device totals, all on the device. ``batch``: (x, y) or (x, y, sample weights).
        ``host_check`` asks for the host-side non-finite check before the update;
        ``flags`` for the device-side one. ``share``: see ``_share``."""
        model, be, optimizer = self.model, self.backend, self.model.optimizer
        xb, yb = batch[:2]
        wb = batch[2] if len(batch) > 2 else None
        if share[0] is None:  # not data-parallel
            out, loss = step_math.loss_and_backward(model, xb, yb, True, optimizer.iterations,
                                                    wb)
            checked = loss
        else:
            parallel = self.parallel
            scale, offset = share
            for layer in self._dropouts:
                layer.row_offset = offset
            reducer = parallel.reducer
            out, loss = step_math.loss_and_backward(
                model, xb, yb, True, optimizer.iterations, wb, grad_scale=scale,
                penalty_gradients=parallel.rank == 0, after_layer=reducer.layer_done)
            reducer.finish()
            # The global loss serves the NaN guard alone (fit checks every rank has one
            # or none): without it, no allreduce.
            guarded = flags is not None or host_check
            checked = self._global_loss(loss, scale) if guarded else loss
        self._apply(checked, flags, host_check)
        be.accumulate(totals.loss, loss, xb.shape[0])
        step_math.update_metrics(model, out, yb, totals.metrics)

    def _empty_step(self, flags, host_check):
        """Data-parallel: this rank's part of a step in which it has no rows (the last
        global batch is shorter than the number of ranks): zero gradients, no loss."""
        model, be, parallel = self.model, self.backend, self.parallel
        be.fill(model.flat_grads, 0)
        for i in range(len(model.layers) - 1, -1, -1):
            parallel.reducer.layer_done(i)
        parallel.reducer.finish()
        guarded = flags is not None or host_check
        self._apply(self._global_loss(None, 0.0) if guarded else None, flags, host_check)

    def _global_loss(self, loss, scale):
        """Data-parallel: the global batch's loss on every rank (each rank's loss
        weighted by its share, summed across ranks), for the NaN guard."""
        be = self.backend
        total = self._step_loss
        be.fill(total, 0)
        if loss is not None:
            be.accumulate(total, loss, scale)
        self.parallel.collectives.allreduce(total)
        return total.reshape(())

    def _apply(self, loss, flags, host_check):
        """The update, unless the NaN guard says no; data-parallel, then the moving
        statistics are averaged across ranks."""
        model, optimizer = self.model, self.model.optimizer
        if host_check:
            self.nan_guard.check_loss(loss, *self._position)
        skip = self.nan_guard.guard(loss, flags) if flags is not None else None
        weights = model.weights
        optimizer.apply_gradients(weights.params, weights.grads, skip=skip)
        weights.refresh_compute()
        if model.replica is not None and model.replica.parallel:
            model.replica.average_state()

    # ------------------------------------------------------------------- evaluate
    def evaluate(self, x_dev, y_dev, w_dev, batch_size):
        """Mean loss (weight penalties included, as Keras) and metrics over device
        arrays, in batches of ``batch_size``: the totals stay on the device and are
        read once."""
        model, be = self.model, self.backend
        totals = self._eval_totals
        be.fill(totals.buffer, 0)
        n = x_dev.shape[0]
        first, last = 0, n
        if self.parallel is not None:  # each rank evaluates its share of the rows
            first, last = split_rows(n, self.parallel.world_size, self.parallel.rank)
        for start in range(first, last, batch_size):
            rows = slice(start, min(start + batch_size, last))
            xb, yb = x_dev[rows], y_dev[rows]
            out, loss, _ = step_math.output_and_loss(
                model, xb, yb, weights=None if w_dev is None else w_dev[rows])
            be.accumulate(totals.loss, loss, xb.shape[0])
            step_math.update_metrics(model, out, yb, totals.metrics)
        if self.parallel is not None:
            self.parallel.reduce_totals(totals.buffer)
        return step_math.logs(model, totals.read(), n)


def _crossed(step, done, every, steps):
    """Whether the ``done`` steps that ended at ``step`` passed a progress point (every
    ``every`` steps, and the last step)."""
    last = (step - 1) % every
    return step == steps or last == every - 1 or last <= done - 2


class _Totals:
    """Running sums on the device, read back in one transfer: the loss times the rows,
    then each metric's slots (counts or sums)."""

    def __init__(self, backend, metrics, dtype):
        self.backend = backend
        self.buffer = backend.zeros((1 + sum(m.slots for m in metrics),), dtype)
        self.loss = self.buffer[0:1]
        self.metrics, offset = [], 1
        for metric in metrics:
            self.metrics.append(self.buffer[offset:offset + metric.slots])
            offset += metric.slots

    def read(self):
        return [float(v) for v in self.backend.to_numpy(self.buffer)]
