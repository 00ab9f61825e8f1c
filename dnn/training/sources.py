"""Where a step's batch comes from. The training loop asks a source for each epoch's
feed: an iterable of the epoch's segments (``dnn.training.epoch_plan.Segment``) that
also turns each segment into the batch the step reads.

- ``ArraySource`` (here): checked device arrays (``dnn.training.data_adapter``),
  gathered on the device, so a multi-step captured graph can gather its own batches.
  The fast path: nothing crosses from the host in a step.
- ``HostArraySource`` (``host_source``): host arrays and memory-mapped files streamed
  to the step by loader threads (a memmap on the CPU, a data set larger than the
  device's memory on a GPU).
- ``SequenceSource`` and ``IterableSource`` (``batch_sources``): batches a user's
  object makes (a Keras-style sequence, a generator, a torch ``DataLoader``).

Every source offers: ``rows`` (samples per epoch, None when unknown), ``specs`` (what
a step reads, ``step_specs``), ``weighted`` (whether batches carry sample weights),
``agreement(model, shard, batch_size)`` (the values every data-parallel rank must
share), ``steps(batch_size, replica)`` (steps per epoch, or None), ``epoch(settings,
epoch)`` (the feed, a context manager) and ``evaluation(model, batch_size, steps)`` (the
evaluation batches, a context manager). A rank's part of any batch comes from
``dnn.training.epoch_plan`` (``rank_share``), never from a source's own arithmetic.
"""
from __future__ import annotations

import dataclasses

from .epoch_plan import EpochPlan, epoch_order, epoch_steps, evaluation_rows
from .fingerprint import device_fingerprint


@dataclasses.dataclass
class EpochSettings:
    """What a source needs to feed one epoch: the model, the batch size of array data
    (None for batch sources), whether to shuffle, steps per captured multi-step graph
    (1: none), and ``device_order(order)``, which puts an order in the trainer's device
    buffer (a captured multi-step graph reads it)."""

    model: object
    batch_size: int | None
    shuffle: bool
    chunk_steps: int
    device_order: object


def step_specs(model, x, y=None, weighted=False):
    """``(trailing shape, dtype)`` of each array a step reads, for features like ``x`` and
    targets like ``y`` (in the loss's layout; None: features only): the features in the
    model's compute dtype, the targets in the loss's, and with ``weighted`` the sample
    weights in the model's dtype."""
    specs = [(tuple(x.shape[1:]), model.compute_dtype)]
    if y is not None:
        specs.append((tuple(y.shape[1:]), model.loss.target_dtype(model.dtype)))
        if weighted:
            specs.append(((), model.dtype))
    return tuple(specs)


def on_device(backend, arrays, specs):
    """``arrays`` on the backend's device in the dtypes of ``specs`` (``step_specs``),
    converted there (a copy only where the dtype or the place differs)."""
    return tuple(backend.asarray(a, dtype=dtype) for a, (_, dtype) in zip(arrays, specs))


def buffers_key(specs):
    """What the batch buffers of arrays like ``specs`` are cached under."""
    return ("batch",) + tuple((tuple(shape), dtype) for shape, dtype in specs)


def batch_buffers(model, rows, specs, key=None):
    """The fixed batch buffers of ``rows`` rows, one per ``(trailing shape, dtype)`` of
    ``specs``, from the model's buffer cache: the same objects at every step of that
    size (a captured step reads them). ``key``: ``buffers_key(specs)``, made once."""
    be = model.backend
    return model.buffers.get(rows, key or buffers_key(specs), lambda r: tuple(
        be.empty((r,) + tuple(shape), dtype) for shape, dtype in specs))


class RowSource:
    """What the sources of a known number of rows (``ArraySource``, ``HostArraySource``)
    share. A subclass sets ``rows`` and gives ``fingerprint(model)``, its data's
    ``{"fingerprint of <name>": int}`` (``dnn.training.fingerprint``); ``shard_rows``
    is every rank's row count once ``agreement`` found shards."""

    shard_rows = None

    def steps(self, batch_size, replica):
        """Steps per epoch: of the global batches, or with shards of this rank's."""
        return epoch_steps(self.rows, batch_size, replica, self.shard_rows is not None)

    def agreement(self, model, shard, batch_size):
        """The values every rank must share (``Replica.check_same``): the rows and a
        fingerprint of the data when ranks hold the same data. With shards (each rank
        its own rows) only the steps, and every rank's rows are kept for the plan."""
        replica = model.replica
        if shard:
            self.shard_rows = [int(r[0]) for r in replica.all_values([self.rows])]
            return {"steps per epoch": self.steps(batch_size, replica)}
        values = {"rows of x": self.rows}
        # Ranks that share out the same global batches must hold the same data. Alone
        # there is no one to compare a fingerprint with, and it costs a pass over the
        # data (reductions and a sample read back): the one branch left on it.
        if replica.shares_batches:
            values.update(self.fingerprint(model))
        return values

    def evaluated_rows(self, model, batch_size, steps, split):
        """``(first, last, rows_total)`` of an evaluation (``epoch_plan.evaluation_rows``)
        of at most ``steps`` batches."""
        total = self.rows if steps is None else min(self.rows, steps * batch_size)
        return evaluation_rows(total, model.replica, split, self.shard_rows is not None)


class ArraySource(RowSource):
    """Device arrays of one data set: features, targets, and per-sample weights (or
    None), the same number of rows each."""

    kind = 0  # what ranks compare: every rank must take the same path

    def __init__(self, x, y, weights=None):
        self.x, self.y, self.weights = x, y, weights
        self.arrays = tuple(a for a in (x, y, weights) if a is not None)
        self.rows = int(x.shape[0])
        self.weighted = weights is not None
        self.specs = tuple((a.shape[1:], a.dtype) for a in self.arrays)
        self.buffers_key = buffers_key(self.specs)

    def fingerprint(self, model):
        return device_fingerprint(model.backend, self.arrays, ("x", "y", "sample_weight"))

    def epoch(self, settings, epoch):
        order = epoch_order(self.rows, settings.model.seed, epoch, settings.shuffle)
        chunk = settings.chunk_steps
        plan = EpochPlan(order, settings.batch_size, settings.model.replica, chunk,
                         self.shard_rows)
        return _ArrayFeed(self, settings, plan)

    def evaluation(self, model, batch_size, steps=None, split=True):
        """The batches of evaluate (``split``: across ranks each its share of the rows)
        or predict (every rank all of them)."""
        return _ArrayEvaluation(self, model, batch_size, steps, split)

    def take(self, backend, order, start, stop, batch):
        """Fill ``batch`` with the rows at positions ``start:stop`` of ``order`` (a
        device int64 array)."""
        for source, target in zip(self.arrays, batch):
            backend.take_rows(source, order[start:stop], out=target)
        return batch

    def rows_between(self, start, stop):
        """``(x, y, weights)`` of the rows ``start:stop``, as views."""
        return tuple(None if a is None else a[start:stop] for a in (self.x, self.y,
                                                                     self.weights))

    def split(self, at):
        """``(first, rest)``: the rows before ``at`` and from it, as sources of views."""
        return (ArraySource(*self.rows_between(0, at)),
                ArraySource(*self.rows_between(at, self.rows)))


class _ArrayFeed:
    """An epoch of an ``ArraySource``: the plan's segments, each batch gathered on the
    device from the epoch's order in device memory."""

    def __init__(self, source, settings, plan):
        self.source, self.model, self.plan = source, settings.model, plan
        self.steps = plan.steps
        self.order = settings.device_order(plan.order)
        self.ended_early = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __iter__(self):
        return iter(self.plan)

    def empty(self):
        return self.steps == 0

    def batch_buffers(self, rows):
        return batch_buffers(self.model, rows, self.source.specs, self.source.buffers_key)

    def batch(self, segment, fixed):
        """The step's batch of one segment, in the fixed batch buffers."""
        return self.source.take(self.model.backend, self.order, segment.start, segment.stop,
                                self.batch_buffers(segment.rows))

    def chunk(self, segment):
        """``(arrays, order, reset)`` a chunk's captured body gathers from, at the
        cursor: the data set and the epoch's order; the cursor restarts with the epoch."""
        return self.source.arrays, self.order, segment.begin == 0


class _ArrayEvaluation:
    """The evaluation batches of an ``ArraySource``: views, this rank's rows."""

    def __init__(self, source, model, batch_size, steps, split):
        self.source, self.model = source, model
        self.batch_size, self.steps = batch_size, steps
        self.first, self.last, self.rows_total = source.evaluated_rows(model, batch_size,
                                                                       steps, split)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __iter__(self):
        for start in range(self.first, self.last, self.batch_size):
            yield self.source.rows_between(start, min(start + self.batch_size, self.last))
