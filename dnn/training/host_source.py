"""``HostArraySource``: host arrays streamed to the step, batch by batch, by loader
threads: a memory-mapped file (on any backend; on the CPU too, where reading its rows
in the training thread would stall every step on page faults), a host array larger than
the device's memory, or a selection of a memmap's rows (``Rows``).

A loader gathers each step's rows from the array (``numpy.take`` into a reused staging
buffer, so nothing is allocated per step), converts them to the dtypes the step reads
(a float64 file for a float32 model is cast batch by batch, never copied whole), checks
them as ``fit`` checks arrays, and hands them to the device (``dnn.training.staging``).
A bad value stops ``fit`` at the batch that holds it, naming its row in the array.

The order of an epoch is that of arrays on the device (``epoch_order``), so a host
array trains exactly as it would from device memory; a memmap's shuffled order is
``block_order``, which reads blocks of contiguous rows. Both are functions of (seed,
epoch): a resumed run continues exactly.
"""
from __future__ import annotations

import functools
import threading

import numpy

from . import checks
from .epoch_plan import EpochPlan, block_order, epoch_order
from .fingerprint import host_fingerprint
from .prefetch import PREFETCH_DEPTH, Prefetcher
from .sources import RowSource, step_specs
from .staging import Landings
from .stream_feed import PlannedFeed, Staged, StreamEvaluation


class Rows:
    """``Rows(x, rows)``: the rows ``rows`` (indices, or a boolean mask) of a host array
    or memmap, as data for ``fit``, ``evaluate`` and ``predict`` without copying them
    out: they are streamed from ``x`` (a train/test split of a file larger than memory).
    The indices are kept sorted, so that the data set's order is the file's."""

    def __init__(self, x, rows):
        rows = numpy.asarray(rows)
        if rows.dtype == bool:
            rows = numpy.flatnonzero(rows)
        if rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise TypeError(f"Rows: rows: expected 1-D integer indices or a boolean mask; "
                            f"got {rows.dtype} of shape {rows.shape}")
        self.x = x
        self.rows = numpy.unique(rows.astype(numpy.int64))
        n = int(numpy.shape(x)[0])
        if self.rows.size and (self.rows[0] < 0 or self.rows[-1] >= n):
            raise ValueError(f"Rows: rows: expected indices in [0, {n}); got "
                             f"{int(self.rows[0] if self.rows[0] < 0 else self.rows[-1])}")

    def __len__(self):
        return int(self.rows.shape[0])


def is_memmap(x):
    return isinstance(x, numpy.memmap)


class HostArraySource(RowSource):
    """``x`` (2-D host array or memmap), ``y`` (host targets in the loss's layout, or
    None for predict), ``weights`` (host float64 per-sample weights, or None),
    ``selection`` (sorted rows of ``x`` that make the data set, or None: all of them;
    ``y`` and ``weights`` hold one entry per row of the data set), ``class_table``
    (fit's class weights, or None)."""

    kind = 1  # what ranks compare: every rank must take the same path

    def __init__(self, model, x, y=None, weights=None, selection=None, class_table=None):
        self.model = model
        self.x, self.y, self.weights = x, y, weights
        self.selection, self.class_table = selection, class_table
        self.rows = int(x.shape[0] if selection is None else selection.shape[0])
        self.weighted = weights is not None or class_table is not None
        self.specs = step_specs(model, x, y, self.weighted)
        self._landings = Landings(model.backend)  # reused across epochs
        self._chunks = {}  # the fixed buffers of multi-step chunks
        self._scratch = threading.local()  # a loader's buffer for rows before a cast

    def fingerprint(self, model):
        """A strided sample of the rows (the file is never read whole for it)."""
        return host_fingerprint([self.x, self.y, self.weights], ["x", "y", "sample_weight"],
                                self.selection)

    # ------------------------------------------------------------------- epochs
    def epoch(self, settings, epoch):
        model, b = self.model, settings.batch_size
        if is_memmap(self.x):
            row_bytes = int(numpy.prod(self.x.shape[1:], dtype=numpy.int64)) * \
                self.x.dtype.itemsize
            order = block_order(self.rows, row_bytes, model.seed, epoch, settings.shuffle)
        else:
            order = epoch_order(self.rows, model.seed, epoch, settings.shuffle)
        plan = EpochPlan(order, b, model.replica, settings.chunk_steps, self.shard_rows)
        tasks = [(s * b, min(plan.rows, (s + 1) * b)) for s in range(plan.steps)]
        ring = PREFETCH_DEPTH + settings.chunk_steps
        landing = self._landings.get(ring, self.specs)
        stage = functools.partial(self._stage, landing, plan.order, b)
        prefetcher = Prefetcher(stage, tasks, ring, describe=self._describe(b))
        return PlannedFeed(model, landing, prefetcher, self._chunks, plan)

    def evaluation(self, model, batch_size, steps=None, split=True):
        first, last, counted = self.evaluated_rows(model, batch_size, steps, split)
        tasks = [(s, min(last, s + batch_size)) for s in range(first, last, batch_size)]
        specs = self.specs if split else self.specs[:1]  # predict reads features only
        ring = PREFETCH_DEPTH + 1
        landing = self._landings.get(ring, specs)
        stage = functools.partial(self._stage, landing, None, batch_size)
        prefetcher = Prefetcher(stage, tasks, ring, describe=self._describe(batch_size))
        return StreamEvaluation(model, landing, prefetcher, counted)

    def _describe(self, batch_size):
        return lambda task: f"the batch of positions {task[0]}:{task[1]} (batch " \
                            f"{task[0] // batch_size})"

    # ------------------------------------------------------------ a loader's work
    def _stage(self, landing, order, batch_size, task, slot):
        """Gather, convert and check the rows of positions ``task`` (of ``order``, or in
        turn when None) into ``slot``; runs in a loader thread."""
        start, stop = task
        rows = numpy.arange(start, stop) if order is None else order[start:stop]
        x_rows = rows if self.selection is None else self.selection[rows]
        buffers = landing.host_buffers(slot, stop - start)
        x = self._gather(self.x, x_rows, buffers[0], "x")
        y = None
        if len(buffers) > 1:
            y = self._gather(self.y, rows, buffers[1], "y")
        checks.check_values(self.model, x, y, "x", x_rows)
        if len(buffers) > 2:
            weights = None if self.weights is None else self.weights[rows]
            numpy.copyto(buffers[2], checks.row_weights(self.model, y, weights,
                                                        self.class_table), casting="unsafe")
        landing.send(slot, stop - start)
        return Staged(stop - start, slot, None, 0, stop - start, start // batch_size)

    def _gather(self, source, rows, out, name):
        """``source[rows]`` into ``out``, converted to its dtype; returns the rows in
        ``source``'s dtype (``out`` itself when the dtypes match), for the checks."""
        if source.dtype == out.dtype:
            return numpy.take(source, rows, axis=0, out=out, mode="clip")
        scratch = getattr(self._scratch, name, None)
        shape = (rows.shape[0],) + source.shape[1:]
        if scratch is None or scratch.shape[0] < shape[0]:
            scratch = numpy.empty(shape, source.dtype)
            setattr(self._scratch, name, scratch)
        scratch = scratch[:shape[0]]
        numpy.take(source, rows, axis=0, out=scratch, mode="clip")
        numpy.copyto(out, scratch, casting="unsafe")
        return scratch

    def split(self, at):
        """``(first, rest)``: the rows before ``at`` and from it (views, or selections)."""
        make = functools.partial(HostArraySource, self.model, class_table=self.class_table)
        if self.selection is None:
            cut = [(slice(0, at)), slice(at, self.rows)]
            return tuple(make(self.x[c], None if self.y is None else self.y[c],
                              None if self.weights is None else self.weights[c]) for c in cut)
        cut = [(slice(0, at)), slice(at, self.rows)]
        return tuple(make(self.x, None if self.y is None else self.y[c],
                          None if self.weights is None else self.weights[c], self.selection[c])
                     for c in cut)
