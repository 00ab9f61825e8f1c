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

import numpy

from ..callbacks import CallbackList, History, ProgressLogger, TerminateOnNaN
from ..layers.base import ForwardContext
from . import passes
from .captured_steps import CapturedSteps
from .epoch_plan import WHOLE, EpochPlan, epoch_order
from .interrupt import StopOnInterrupt
from .nan_guard import NanGuard
from .totals import Totals


@dataclasses.dataclass
class _Run:
    """What one ``fit`` call decided: its options and callbacks, the NaN guard (or
    None), whether steps replay captured graphs and how many steps a chunk holds."""

    options: object
    callbacks: CallbackList
    guard: NanGuard | None
    use_graph: bool
    chunk_steps: int
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
            run.callbacks.on_train_end()
        return model.history

    def _train_epoch(self, run, train, validation, epoch):
        """One epoch with its callbacks and validation; returns whether to stop."""
        model = self.model
        run.callbacks.on_epoch_begin(epoch)
        logs, complete = self._run_epoch(run, train, epoch)
        if validation is not None:
            val_logs = self.evaluate(validation, run.options.validation_batch_size)
            logs.update({"val_" + k: v for k, v in val_logs.items()})
        if complete:  # a partial epoch is not resumable as done
            model.epochs_done = epoch + 1
        run.callbacks.on_epoch_end(epoch, logs)
        model.stop_training = self.replica.agree_stop(model.stop_training, True)
        return model.stop_training

    def _prepare(self, train, options, validation):
        """The run of one fit call: callbacks, the guard, graphs, and the replicas'
        agreement on all of it."""
        model, be, replica = self.model, self.backend, self.replica
        clipnorm = model.optimizer.clipnorm is not None
        if options.cuda_graph is True and be.supports_graphs and clipnorm:
            raise ValueError("cuda_graph: expected 'auto' or False with clipnorm (the global "
                             "norm needs temporaries a captured graph cannot own); got True")
        use_graph = options.cuda_graph is True or (
            options.cuda_graph == "auto" and be.supports_graphs and not clipnorm)
        if use_graph and be.supports_graphs and not replica.capturable:
            if options.cuda_graph is True:
                raise ValueError(f"cuda_graph: expected 'auto' or False with the "
                                 f"{replica.communicator_name!r} communicator (its calls run "
                                 f"on the host, outside any CUDA graph); got True")
            use_graph = False
        callbacks = list(options.callbacks)
        if options.terminate_on_nan and not any(isinstance(c, TerminateOnNaN)
                                                for c in callbacks):
            callbacks.append(TerminateOnNaN())
        terminator = next((c for c in callbacks if isinstance(c, TerminateOnNaN)), None)
        replica.check_same("fit", **{
            "rows of x": train.rows, "sample weights": int(train.weights is not None),
            "validation rows": 0 if validation is None else validation.rows,
            "steps_per_execution": model.steps_per_execution,
            "terminate_on_nan": int(terminator is not None), **options.agreed_values()})
        guard = None
        if terminator is not None:
            guard = self.nan_guard
            # A captured step must not read the device, so it takes the device flags.
            guard.configure(on_host=be.cheap_host_reads and not use_graph,
                            restore_weights=terminator.restore_weights)
        self.captured.fallback = options.cuda_graph == "auto"
        callback_list = self._callbacks(callbacks, options, train, validation is not None)
        return _Run(options, callback_list, guard, use_graph,
                    model.steps_per_execution if use_graph else 1)

    def _callbacks(self, callbacks, options, train, with_val):
        model = self.model
        steps = -(-train.rows // (options.batch_size * self.replica.world_size))
        model.history = History()
        callbacks.insert(0, model.history)
        if options.verbose and self.replica.is_chief:  # data-parallel: the chief reports
            callbacks.append(ProgressLogger(verbose=options.verbose))
        names = ["loss"] + [m.name for m in model.metrics]
        return CallbackList(callbacks, model=model, params={
            "epochs": options.epochs, "steps": steps, "samples": train.rows,
            "batch_size": options.batch_size, "verbose": options.verbose,
            "metrics": names + ["val_" + k for k in names] * with_val})

    def _run_epoch(self, run, source, epoch):
        """One epoch: the plan's segments in order. Reads the device only where it must:
        the loss and metric totals once at the end, plus the loss at progress points when
        a callback wants per-batch logs (and the NaN guard's flag at those same points).

        With graphs, full batches replay a captured step; with ``steps_per_execution`` K
        > 1 too, K steps replay as one graph that gathers its own batches from the
        epoch's order in device memory, so the host does nothing per step. Returns
        ``(logs, complete)``."""
        model, be = self.model, self.backend
        plan = self._plan(run, source, epoch)
        order = self._upload_order(plan.order)
        run.flags = run.guard.begin_epoch() if run.guard is not None else None
        be.fill(self._train_totals.buffer, 0)
        steps, seen = 0, plan.rows_total
        for segment in plan:
            self._run_segment(run, source, order, segment, epoch, plan.steps)
            steps += segment.steps
            model.train_steps += segment.steps
            crossed = plan.crossed(steps, segment.steps)
            if crossed:
                self._progress_point(run, plan, epoch, steps)
            if self.replica.agree_stop(model.stop_training, crossed and steps < plan.steps):
                model.stop_training = True
                seen = plan.seen(steps)
                break
        if run.flags is not None:
            run.guard.check_flags(epoch, plan.steps)
        self.replica.reduce_totals(self._train_totals.buffer)
        return passes.logs(model, self._train_totals.read(), seen), seen == plan.rows_total

    def _plan(self, run, source, epoch):
        order = epoch_order(source.rows, self.model.seed, epoch, run.options.shuffle)
        batch_size = run.options.batch_size
        every = 1 if self.backend.cheap_host_reads else max(
            1, -(-source.rows // (batch_size * self.replica.world_size)) // 20)
        chunk = run.chunk_steps if source.device_gather else 1
        return EpochPlan(order, batch_size, self.replica, chunk, every)

    def _progress_point(self, run, plan, epoch, steps):
        """Batch logs for the callbacks that want them. Across ranks every rank checks
        the guard at the same steps, whatever its callbacks, so that all stop together."""
        callbacks = run.callbacks
        if run.flags is not None and (callbacks.wants_batch_logs or self.replica.lockstep):
            run.guard.check_flags(epoch, plan.steps)
        if callbacks.wants_batch_logs:
            loss = self.backend.to_float(self._train_totals.loss[0])
            callbacks.on_train_batch_end(steps - 1, {
                "loss": loss / max(plan.rows_seen(steps), 1), "seen": plan.seen(steps)})

    def _upload_order(self, order):
        """The epoch's order in a device buffer that lives as long as the trainer (a
        captured multi-step graph reads it)."""
        if self._order is None or self._order.shape[0] != order.shape[0]:
            self._order = self.backend.empty((order.shape[0],), "int64")
            self.captured.release_call_graphs()
        self.backend.copy(self.backend.asarray(order), out=self._order)
        return self._order

    def _run_segment(self, run, source, order, segment, epoch, steps):
        """Train the steps of one segment of the plan."""
        batch_size = run.options.batch_size
        position = (epoch, segment.begin, steps)  # for the host check's message
        if segment.start is None:  # a chunk: K steps gathered and replayed on the device
            if segment.begin == 0:
                self.backend.fill(self._cursor, 0)
            batch = source.batch_buffers(self.model, batch_size)
            body = functools.partial(self._train_chunk, segment.steps, source, order, batch,
                                     run, segment.share)
            self.captured.run(batch_size, body, self._binding(run, batch, source.arrays),
                              steps=segment.steps)
            return
        rows = segment.stop - segment.start
        if rows == 0:  # a rank with no rows in the last, short global batch
            self.replica.contribute_nothing()
            self._apply(self._guarded_loss(run, None, 0.0), run, position)
            return
        batch = source.take(self.backend, order, segment.start, segment.stop,
                            source.batch_buffers(self.model, rows))
        # Bound now: a replayed step keeps the buffers it was captured with.
        one = functools.partial(self._train_step, batch, run, segment.share, position)
        if run.use_graph and segment.replayable:
            self.captured.run(batch_size, one, self._binding(run, batch, (segment.share,)))
        else:
            one()

    def _binding(self, run, batch, extra):
        """Everything a captured body is bound to, flat (see ``CapturedSteps.run``)."""
        flags = run.flags or (None,)
        return (*batch, *flags, self._train_totals.buffer, run.host_check, *extra)

    def _train_chunk(self, k, source, order, batch, run, share):
        """``k`` training steps, each gathering its batch at the cursor in device memory."""
        for _ in range(k):
            source.gather(self.backend, order, self._cursor, batch)
            self.backend.advance(self._cursor, batch[0].shape[0])
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
        use_graph = be.supports_graphs and model.optimizer.clipnorm is None and \
            self.replica.capturable
        run = _Run(None, None, None, use_graph, 1)
        batch = source.batch_buffers(model, source.rows)
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
    def evaluate(self, source, batch_size):
        """Mean loss (weight penalties included, as Keras) and metrics over a source's
        device arrays, in batches of ``batch_size``: the totals stay on the device and
        are read once. Across ranks each rank evaluates its share of the rows."""
        model, be = self.model, self.backend
        totals = self._eval_totals
        be.fill(totals.buffer, 0)
        first, last = self.replica.evaluation_rows(source.rows)
        for start in range(first, last, batch_size):
            xb, yb, wb = source.rows_between(start, min(start + batch_size, last))
            out, loss, _, _ = passes.output_and_loss(model, xb, yb, weights=wb)
            be.accumulate(totals.loss, loss, xb.shape[0])
            passes.update_metrics(model, out, yb, totals.metrics, wb)
        self.replica.reduce_totals(totals.buffer)
        return passes.logs(model, totals.read(), source.rows)
