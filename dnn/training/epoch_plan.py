"""The plan of one epoch: which rows each step trains on, which steps replay together as
one captured graph, this rank's share of every global batch, and where the progress
points fall. The training loop only drives it (the shape of Keras 3's
``EpochIterator``, which yields ``(begin_step, end_step, data)``).

The plan speaks of positions in the epoch's order, not of arrays: a source of batches
(``dnn.training.sources``) turns a segment into the batch it names.
"""
from __future__ import annotations

import collections

import numpy

# A rank's part of one global batch: the factor on its loss gradient (its rows over the
# global batch's; None in a world of one, where nothing is scaled), and where its rows
# start in the global batch (for the dropout mask).
Share = collections.namedtuple("Share", "scale row_offset")
WHOLE = Share(None, 0)

# ``steps`` steps from step ``begin``. A chunk (``start`` None) is several full batches
# that a captured graph gathers itself, at a cursor in device memory; otherwise one
# batch, the rows ``order[start:stop]`` of this rank's order (none: a rank with no rows
# in the last, short global batch). ``replayable``: a full batch that may replay the
# step captured for full batches.
Segment = collections.namedtuple("Segment", "begin steps start stop share replayable")


def split_rows(count, world, rank):
    """``(start, stop)`` of rank ``rank``'s share of ``count`` rows: contiguous shares,
    the first ``count % world`` ranks one row longer."""
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def rank_order(order, batch_size, world, rank):
    """Rank ``rank``'s rows of an epoch's order (host int64): its share of every global
    batch of ``batch_size x world`` rows, in step order. Returns ``(rows, steps,
    last)``: the rows, the number of global steps, and ``(start, stop, global rows)``
    of the last, short global batch (or None when every batch is full)."""
    n = order.shape[0]
    step_rows = batch_size * world
    full, remainder = divmod(n, step_rows)
    mine = [order[:full * step_rows].reshape(full, world, batch_size)[:, rank].ravel()]
    last = None
    if remainder:
        start, stop = split_rows(remainder, world, rank)
        mine.append(order[full * step_rows + start:full * step_rows + stop])
        last = (start, stop, remainder)
    return numpy.concatenate(mine), full + (remainder > 0), last


def epoch_order(rows, seed, epoch, shuffle):
    """The sample order of epoch ``epoch``: a function of ``(seed, epoch)`` alone, so a
    run resumes exactly."""
    if not shuffle:
        return numpy.arange(rows)
    return numpy.random.default_rng([seed, epoch]).permutation(rows)


class EpochPlan:
    """The steps of one epoch over ``order`` (every row's index, in the epoch's order)
    in global batches of ``batch_size`` rows per rank.

    ``replica``: the model's replica (its rank and world size); ``chunk_steps``: steps
    per captured multi-step graph (1: none); ``progress_every``: steps between progress
    points (the last step always is one)."""

    def __init__(self, order, batch_size, replica, chunk_steps=1, progress_every=1):
        self.rows_total = int(order.shape[0])
        self.batch_size = batch_size
        self.world_size = replica.world_size
        if not replica.shares_batches:
            self.order, self.steps, last = order, -(-self.rows_total // batch_size), None
        else:
            self.order, self.steps, last = rank_order(order, batch_size, replica.world_size,
                                                      replica.rank)
        self.rows = int(self.order.shape[0])  # this rank's rows in the epoch
        self._last = last
        full = self.rows // batch_size if last is None else self.steps - 1
        self.chunks = full // chunk_steps if chunk_steps > 1 else 0
        self.chunk_steps = chunk_steps
        self.progress_every = max(1, progress_every)
        self._full_share = WHOLE if not replica.shares_batches else Share(
            1.0 / replica.world_size, replica.rank * batch_size)

    def __iter__(self):
        k, b = self.chunk_steps, self.batch_size
        for i in range(self.chunks):
            yield Segment(i * k, k, None, None, self._full_share, True)
        last_share = self._full_share if self._last is None else \
            Share((self._last[1] - self._last[0]) / self._last[2], self._last[0])
        for step in range(self.chunks * k, self.steps):
            start, stop = step * b, min(self.rows, (step + 1) * b)
            final = step == self.steps - 1
            # The last global batch never replays a full batch's graph: a rank may hold
            # batch_size rows of it with another share and offset.
            replayable = stop - start == b and (self._last is None or not final)
            yield Segment(step, 1, start, stop, last_share if final else self._full_share,
                          replayable)

    def crossed(self, end, done):
        """Whether the ``done`` steps that ended at step ``end`` (its count of steps
        taken) passed a progress point."""
        every = self.progress_every
        last = (end - 1) % every
        return end == self.steps or last == every - 1 or last <= done - 2

    def seen(self, steps_taken):
        """Samples of the global epoch trained after ``steps_taken`` steps."""
        return min(self.rows_total, steps_taken * self.batch_size * self.world_size)

    def rows_seen(self, steps_taken):
        """This rank's rows trained after ``steps_taken`` steps."""
        return min(self.rows, steps_taken * self.batch_size)
