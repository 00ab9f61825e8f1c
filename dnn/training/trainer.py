"""The training loop, apart from the model (the shape of Keras 3's ``Trainer``).

``Trainer`` drives a compiled ``Sequential``: for each epoch it walks the epoch's plan
(``EpochPlan``), running each step eagerly or replaying a captured graph, with the NaN
guard, callbacks and validation; and it runs the evaluation loop. The model keeps the
structure and the weights; the math of one step is ``dnn.training.passes``; everything
that differs across ranks is the model's replica (``dnn.training.replica``).

The shuffle order of epoch ``e`` is a function of ``(seed, e)`` and dropout masks of
``(seed, layer, step)``, so a run can be resumed exactly.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings

import numpy

from ..callbacks import CallbackList, History, ProgressLogger, TerminateOnNaN
from ..layers.base import ForwardContext
from . import passes
from .captured_steps import CapturedSteps
from .epoch_plan import WHOLE, progress_crossed
from .interrupt import StopOnInterrupt
from .nan_guard import NanGuard
from .sources import EpochSettings, batch_buffers
from .totals import Totals


@dataclasses.dataclass
class _Run:
    """What one ``fit`` call decided: its options and callbacks, the NaN guard (or
    None), whether steps replay captured graphs and how many steps a chunk holds."""

    options: object
    callbacks: CallbackList
    guard: NanGuard | None
    use_graph: bool
    settings: EpochSettings  # what a source needs to feed an epoch
    params: dict  # what the callbacks were told (the steps, once a pass has shown them)
    flags: tuple | None = None  # this epoch's device flags of the NaN guard

    @property
    def host_check(self):
        return self.guard is not None and self.guard.on_host


class Trainer:
    """The training machinery of one compiled, built model."""

    def __init__(self, model):
        self.model = model
        self.backend = model.backend
        self.replica = model.replica
        self.nan_guard = NanGuard(model)
        self.captured = CapturedSteps(model)
        self._train_totals = Totals(self.backend, model.metrics, model.dtype)
        self._eval_totals = Totals(self.backend, model.metrics, model.dtype)
        self._order = None  # int64 device buffer: this rank's order of the epoch
        self._cursor = self.backend.zeros((1,), "int64")  # the next position in the order

    # ------------------------------------------------------------------------ fit
    def fit(self, train, options, validation=None):
        """See ``Sequential.fit``. ``train`` and ``validation`` (or None) are sources
        (``dnn.training.sources``); ``options`` a ``FitOptions``."""
        model = self.model
        run = self._prepare(train, options, validation)
        model.stop_training = False
        run.callbacks.on_train_begin()
        try:
            # Overflow in a diverging run is the NaN guard's to report, with the epoch and
            # step and what to do; NumPy's RuntimeWarnings would only print before it.
            with StopOnInterrupt(model), numpy.errstate(over="ignore", invalid="ignore",
                                                        divide="ignore"):
                for epoch in range(options.initial_epoch, options.epochs):
                    if self._train_epoch(run, train, validation, epoch):
                        break
        finally:
            self.captured.release_call_graphs()
            if options.epochs > options.initial_epoch:  # as Keras: the weights' average
                model.optimizer.finalize_variable_values(model.weights.params)
                model.weights.refresh_compute()
            for source in (train, validation):
                if hasattr(source, "close"):
                    source.close()
            run.callbacks.on_train_end()
        return model.history

    def _train_epoch(self, run, train, validation, epoch):
        """One epoch with its callbacks and validation; returns whether to stop."""
        model = self.model
        with train.epoch(run.settings, epoch) as feed:
            if feed.empty():  # the data ended before this epoch: nothing left to train on
                warnings.warn(f"fit: the data ran out before epoch {epoch + 1}; training "
                              f"stopped (a generator gives one pass: pass steps_per_epoch= "
                              f"with a generator that yields steps_per_epoch x epochs "
                              f"batches, or a re-iterable such as a Sequence or a "
                              f"DataLoader)", RuntimeWarning, stacklevel=4)
                return True
            run.callbacks.on_epoch_begin(epoch)
            logs, complete = self._run_epoch(run, feed, epoch)
        if feed.ended_early:
            warnings.warn(f"fit: the data ran out during epoch {epoch + 1}, after fewer than "
                          f"steps_per_epoch={feed.steps} batches; training stops after this "
                          f"epoch (a generator must yield steps_per_epoch x epochs batches)",
                          RuntimeWarning, stacklevel=4)
            model.stop_training = True
        if validation is not None:
            val_logs = self.evaluate(validation, run.options.validation_batch_size,
                                     run.options.validation_steps)
            logs.update({"val_" + k: v for k, v in val_logs.items()})
        if complete:  # a partial epoch is not resumable as done
            model.epochs_done = epoch + 1
        run.callbacks.on_epoch_end(epoch, logs)
        model.stop_training = self.replica.agree_stop(model.stop_training, True)
        return model.stop_training

    def _prepare(self, train, options, validation):
        """The run of one fit call: callbacks, the guard, graphs, and the replicas'
        agreement on all of it."""
        model, be = self.model, self.backend
        use_graph = self._use_graph(options)
        callbacks = list(options.callbacks)
        if options.terminate_on_nan and not any(isinstance(c, TerminateOnNaN)
                                                for c in callbacks):
            callbacks.append(TerminateOnNaN())
        terminator = next((c for c in callbacks if isinstance(c, TerminateOnNaN)), None)
        self._agree_data(train, options, validation, terminator)
        guard = None
        if terminator is not None:
            guard = self.nan_guard
            # A captured step must not read the device, so it takes the device flags.
            guard.configure(on_host=be.cheap_host_reads and not use_graph,
                            restore_weights=terminator.restore_weights)
        self.captured.fallback = options.cuda_graph == "auto"
        params = self._params(options, train, validation is not None)
        callback_list = self._callbacks(callbacks, options, params)
        settings = EpochSettings(model, options.batch_size, options.shuffle,
                                 model.steps_per_execution if use_graph else 1,
                                 self._upload_order)
        return _Run(options, callback_list, guard, use_graph, settings, params)

    def _use_graph(self, options):
        """Whether steps replay captured graphs (see ``Sequential.fit``'s cuda_graph)."""
        model, be, replica = self.model, self.backend, self.replica
        uncapturable = not model.optimizer.capturable
        # Refused on every backend: what a GPU's capture cannot hold fails on the CPU too.
        if options.cuda_graph is True and uncapturable:
            raise ValueError("cuda_graph: expected 'auto' or False with the legacy formula's "
                             "clipnorm (its joint norm needs temporaries a captured graph "
                             "cannot own); got True")
        use_graph = options.cuda_graph is True or (
            options.cuda_graph == "auto" and be.supports_graphs and not uncapturable)
        if use_graph and be.supports_graphs and not replica.capturable:
            if options.cuda_graph is True:
                raise ValueError(f"cuda_graph: expected 'auto' or False with the "
                                 f"{replica.communicator_name!r} communicator (its calls run "
                                 f"on the host, outside any CUDA graph); got True")
            use_graph = False
        return use_graph

    def _agree_data(self, train, options, validation, terminator):
        """Across ranks: the same arguments and kinds of data first (so that every rank
        takes the same path below), then the same data (its rows and fingerprint), or
        with shards the same number of steps."""
        model, replica = self.model, self.replica
        replica.check_same("fit", **{
            "kind of data": train.kind, "sample weights": int(train.weighted),
            "validation data": -1 if validation is None else validation.kind,
            "steps_per_execution": model.steps_per_execution,
            "terminate_on_nan": int(terminator is not None), **options.agreed_values()})
        values = dict(train.agreement(model, options.shard, options.batch_size))
        if validation is not None:
            # Validation has no collective per batch: with shards its sizes may differ.
            agreed = validation.agreement(model, options.shard, options.validation_batch_size)
            values.update({f"validation {k}": v for k, v in agreed.items()
                           if not options.shard})
        if values:
            replica.check_same("fit", **values)

    def _params(self, options, train, with_val):
        """What the callbacks are told of the run (Keras's ``params``)."""
        names = ["loss"] + [m.name for m in self.model.metrics]
        return {"epochs": options.epochs, "steps": train.steps(options.batch_size, self.replica),
                "samples": train.rows, "batch_size": options.batch_size,
                "verbose": options.verbose,
                "metrics": names + ["val_" + k for k in names] * with_val}

    def _callbacks(self, callbacks, options, params):
        model = self.model
        model.history = History()
        callbacks.insert(0, model.history)
        if options.verbose and self.replica.is_chief:  # data-parallel: the chief reports
            callbacks.append(ProgressLogger(verbose=options.verbose))
        return CallbackList(callbacks, model=model, params=params)

    def _run_epoch(self, run, feed, epoch):
        """One epoch: the feed's segments in order. Reads the device only where it must:
        the loss and metric totals once at the end, plus the loss at progress points when
        a callback wants per-batch logs (and the NaN guard's flag at those same points).

        With graphs, full batches replay a captured step; with ``steps_per_execution`` K
        > 1 too, K steps replay as one graph that gathers its own batches from device
        memory, so the host does nothing per step. Returns ``(logs, complete)``."""
        model, be = self.model, self.backend
        run.flags = run.guard.begin_epoch() if run.guard is not None else None
        be.fill(self._train_totals.buffer, 0)
        count = _Count(feed.steps, self._progress_every(feed.steps))
        stopped = False
        for segment in feed:
            self._run_segment(run, feed, segment, (epoch, segment.begin, feed.steps))
            model.train_steps += segment.steps
            crossed = count.add(segment)
            if crossed:
                self._progress_point(run, count, epoch)
            if self.replica.agree_stop(model.stop_training, crossed and not count.last):
                model.stop_training = True
                stopped = not count.last  # a stop after the last step ends a whole epoch
                break
        if feed.steps is None and not stopped:  # learned: the bar shows it from now on
            run.params["steps"] = feed.steps = count.steps
        if run.flags is not None:
            run.guard.check_flags(epoch, feed.steps)
        self.replica.reduce_totals(self._train_totals.buffer)
        logs = passes.logs(model, self._train_totals.read(), max(count.seen, 1))
        return logs, not stopped and not feed.ended_early

    def _progress_every(self, steps):
        """Steps between progress points: every step where reading the device is free,
        else about 20 per epoch (every 10 steps while the epoch's length is unknown)."""
        if self.backend.cheap_host_reads:
            return 1
        return 10 if steps is None else max(1, steps // 20)

    def _progress_point(self, run, count, epoch):
        """Batch logs for the callbacks that want them. Across ranks every rank checks
        the guard at the same steps, whatever its callbacks, so that all stop together."""
        callbacks = run.callbacks
        if run.flags is not None and (callbacks.wants_batch_logs or self.replica.lockstep):
            run.guard.check_flags(epoch, count.total)
        if callbacks.wants_batch_logs:
            loss = self.backend.to_float(self._train_totals.loss[0])
            callbacks.on_train_batch_end(count.steps - 1, {
                "loss": loss / max(count.rows, 1), "seen": count.seen})

    def _upload_order(self, order):
        """The epoch's order in a device buffer that lives as long as the trainer (a
        captured multi-step graph reads it)."""
        if self._order is None or self._order.shape[0] != order.shape[0]:
            self._order = self.backend.empty((order.shape[0],), "int64")
            self.captured.release_call_graphs()
        self.backend.copy(self.backend.asarray(order), out=self._order)
        return self._order

    def _run_segment(self, run, feed, segment, position):
        """Train the steps of one segment of the feed. ``position``: ``(epoch, step,
        steps)``, which the host check names."""
        batch_size = segment.rows // segment.steps
        if segment.start is None:  # a chunk: K steps gathered and replayed on the device
            arrays, order, reset = feed.chunk(segment)
            if reset:
                self.backend.fill(self._cursor, 0)
            batch = feed.batch_buffers(batch_size)
            body = functools.partial(self._train_chunk, segment.steps, arrays, order, batch,
                                     run, segment.share)
            self.captured.run(batch_size, body, self._binding(run, batch, arrays),
                              steps=segment.steps)
            return
        if segment.rows == 0:  # a rank with no rows in the last, short global batch
            self.replica.contribute_nothing()
            self._apply(self._guarded_loss(run, None, 0.0), run, position)
            return
        batch = feed.batch(segment, fixed=run.use_graph)
        if run.use_graph and segment.replayable:
            # Bound now: a replayed step keeps the buffers it was captured with.
            one = functools.partial(self._train_step, batch, run, segment.share, position)
            self.captured.run(batch_size, one, self._binding(run, batch, (segment.share,)))
        else:
            self._train_step(batch, run, segment.share, position)

    def _binding(self, run, batch, extra):
        """Everything a captured body is bound to, flat (see ``CapturedSteps.run``)."""
        flags = run.flags or (None,)
        return (*batch, *flags, self._train_totals.buffer, run.host_check, *extra)

    def _train_chunk(self, k, arrays, order, batch, run, share):
        """``k`` training steps, each gathering its batch from ``arrays`` at the cursor's
        positions of ``order`` in device memory."""
        be = self.backend
        for _ in range(k):
            for source, target in zip(arrays, batch):
                be.gather_rows(source, order, self._cursor, out=target)
            be.advance(self._cursor, batch[0].shape[0])
            self._train_step(batch, run, share)

    def _train_step(self, batch, run, share, position=None):
        """Forward, loss, backward, update, and the batch's loss and metrics added to the
        device totals, all on the device. ``position``: ``(epoch, step, steps)``, which
        the host check names (a captured step checks on the device instead)."""
        model, be, replica = self.model, self.backend, self.replica
        context = ForwardContext(True, model.optimizer.iterations, share.row_offset)
        out, loss = passes.loss_and_backward(model, batch, context, share, replica)
        replica.after_backward()
        self._apply(self._guarded_loss(run, loss, share.scale), run, position)
        be.accumulate(self._train_totals.loss, loss, batch[0].shape[0])
        passes.update_metrics(model, out, batch[1], self._train_totals.metrics,
                              batch[2] if len(batch) > 2 else None)

    def _guarded_loss(self, run, loss, scale):
        """The loss the NaN guard checks: the global batch's (each rank's loss weighted by
        its share, summed across ranks), or None when there is no guard."""
        if run.guard is None:
            return loss
        return self.replica.global_loss(loss, scale)

    def _apply(self, loss, run, position):
        """The update, unless the NaN guard says no; then the replica agrees the state
        that drifts across ranks."""
        model, optimizer = self.model, self.model.optimizer
        skip = None
        if run.host_check:
            self.nan_guard.check_loss(loss, *position)
        elif run.guard is not None:
            skip = self.nan_guard.guard(loss, run.flags)
        weights = model.weights
        optimizer.apply_gradients(weights.params, weights.grads, skip=skip)
        weights.refresh_compute()
        self.replica.after_update()

    # -------------------------------------------------------------- one batch
    def train_batch(self, source):
        """One training step on every row of ``source`` (``train_on_batch``): fit's step,
        captured and replayed where the backend captures, without the NaN guard (as
        Keras); returns the logs of that batch."""
        model, be = self.model, self.backend
        use_graph = be.supports_graphs and model.optimizer.capturable and \
            self.replica.capturable
        run = _Run(None, None, None, use_graph, None, {})
        batch = batch_buffers(model, source.rows, source.specs, source.buffers_key)
        for array, buffer in zip(source.arrays, batch):
            be.copy(array, out=buffer)
        be.fill(self._train_totals.buffer, 0)
        step = functools.partial(self._train_step, batch, run, WHOLE)
        self.captured.fallback = True
        with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if use_graph:
                self.captured.run(source.rows, step, self._binding(run, batch, (WHOLE,)))
            else:
                step()
        model.train_steps += 1
        return passes.logs(model, self._train_totals.read(), source.rows)

    # ------------------------------------------------------------------- evaluate
    def evaluate(self, source, batch_size, steps=None):
        """Mean loss (weight penalties included, as Keras) and metrics over a source, in
        batches of ``batch_size`` (array data; a batch source's own batches otherwise),
        at most ``steps`` of them: the totals stay on the device and are read once.
        Across ranks each rank evaluates its share of the rows (with shards, its own)."""
        model, be = self.model, self.backend
        totals = self._eval_totals
        be.fill(totals.buffer, 0)
        rows = 0
        with source.evaluation(model, batch_size, steps) as batches:
            for xb, yb, wb in batches:
                if xb.shape[0] == 0:  # a rank with no rows of a small batch
                    continue
                out, loss, _, _ = passes.output_and_loss(model, xb, yb, weights=wb)
                be.accumulate(totals.loss, loss, xb.shape[0])
                passes.update_metrics(model, out, yb, totals.metrics, wb)
                rows += xb.shape[0]
            total = batches.rows_total
        self.replica.reduce_totals(totals.buffer)
        if total is None:  # each rank its own rows: add up every rank's count
            total = sum(int(r[0]) for r in self.replica.all_values([rows]))
        if total == 0:
            raise ValueError("evaluate: the data gave no batches (an exhausted generator?)")
        return passes.logs(model, totals.read(), total)


class _Count:
    """What an epoch has done so far: steps, this rank's rows, the global epoch's rows
    (``seen``), and whether a segment crossed a progress point."""

    def __init__(self, total, every):
        self.total, self.every = total, every  # total: the epoch's steps, or None
        self.steps = self.rows = self.seen = 0

    def add(self, segment):
        self.steps += segment.steps
        self.rows += segment.rows
        self.seen += segment.global_rows
        return progress_crossed(self.steps, segment.steps, self.total, self.every)

    @property
    def last(self):
        return self.steps == self.total
