"""The plan of one epoch: which rows each step trains on, which steps replay together as
one captured graph, this rank's share of every global batch, and where the progress
points fall. The training loop only drives it (the shape of Keras 3's
``EpochIterator``, which yields ``(begin_step, end_step, data)``).

The plan speaks of positions in the epoch's order, not of arrays: a source of batches
(``dnn.training.sources``) turns a segment into the batch it names. A source whose
batches are only known as they arrive (a generator) makes its segments as they come
(``dnn.training.batch_sources``), with the same fields.
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
# step captured for full batches. ``rows``: this rank's rows in the segment;
# ``global_rows``: every rank's together.
Segment = collections.namedtuple("Segment",
                                 "begin steps start stop share replayable rows global_rows")

# The shuffled order of a memmap (``block_order``): blocks of about this many bytes of
# contiguous rows, and the number of blocks whose rows are shuffled together.
BLOCK_BYTES = 1 << 20
WINDOW_BLOCKS = 64


def split_rows(count, world, rank):
    """``(start, stop)`` of rank ``rank``'s share of ``count`` rows: contiguous shares,
    the first ``count % world`` ranks one row longer."""
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def rank_share(held, replica):
    """``(share, global rows)`` of the replica's rank in one global batch whose ranks hold
    ``held`` rows each (in rank order; their rows laid end to end make the batch): the
    factor on its loss gradient, its rows over the batch's, and where its rows start.
    ``WHOLE`` where the replica does not share out batches (a world of one). The one
    place where a rank's part of a global batch is computed: every source and the epoch
    plan take theirs from here."""
    total = int(sum(held))
    if not replica.shares_batches:
        return WHOLE, total
    rank = replica.rank
    return Share(int(held[rank]) / total, int(sum(held[:rank]))), total


def split_batch(total, replica):
    """``(start, stop, share)`` of the replica's rank in a global batch of ``total`` rows
    that every rank holds whole: its contiguous rows of it (``split_rows``) and its share
    (``rank_share``); all the rows and ``WHOLE`` in a world of one."""
    if not replica.shares_batches:
        return 0, total, WHOLE
    world = replica.world_size
    held = [stop - start for start, stop in (split_rows(total, world, r) for r in range(world))]
    share, _ = rank_share(held, replica)
    return share.row_offset, share.row_offset + held[replica.rank], share


def epoch_steps(rows, batch_size, replica, sharded=False):
    """Steps of an epoch over ``rows`` rows in batches of ``batch_size`` per rank: global
    batches (every rank its share of each, ``rank_order``), or with ``sharded`` (each
    rank its own ``rows``) this rank's batches."""
    world = replica.world_size if replica.shares_batches and not sharded else 1
    return -(-rows // (batch_size * world))


def evaluation_rows(rows, replica, split, sharded):
    """``(first, last, rows_total)`` of an evaluation on the replica's rank: the rows
    ``first:last`` of ``rows`` that it evaluates, and the rows every rank evaluates
    together (None: each rank its own, the trainer adds up their counts; -1: counted
    as the batches are read). ``split``: the ranks share the rows out (evaluate; predict
    gives every rank all of them); ``sharded``: each rank holds its own rows. ``rows``
    None: a batch source's, unknown until read, each batch shared out as it is read
    (``split_batch``); ``first`` and ``last`` are then None."""
    if split and sharded:
        return 0, rows, None
    if rows is None:
        return None, None, -1
    first, last = replica.evaluation_rows(rows) if split else (0, rows)
    return first, last, rows


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


def block_order(rows, row_bytes, seed, epoch, shuffle):
    """The sample order of epoch ``epoch`` over a memory-mapped array, shuffled so that
    reads stay local: a function of ``(seed, epoch)`` alone, as ``epoch_order``.

    The rows are cut into blocks of ``max(1, BLOCK_BYTES // row_bytes)`` contiguous
    rows (the last block may be shorter). ``numpy.random.default_rng([seed, epoch])``
    draws a permutation of the blocks; the permuted blocks are then taken
    ``WINDOW_BLOCKS`` at a time, and for each such window in turn the same generator
    draws a permutation of the window's rows (listed block by block in the window's
    order, each block's rows ascending). The epoch's order is the windows' permuted
    rows, one window after another. Without ``shuffle``: ``0, 1, ..., rows - 1``."""
    if not shuffle:
        return numpy.arange(rows)
    block = max(1, BLOCK_BYTES // max(1, int(row_bytes)))
    rng = numpy.random.default_rng([seed, epoch])
    blocks = rng.permutation(-(-rows // block))
    order = numpy.empty(rows, numpy.int64)
    within = numpy.arange(block)
    filled = 0
    for first in range(0, blocks.shape[0], WINDOW_BLOCKS):
        window = (blocks[first:first + WINDOW_BLOCKS, None] * block + within).ravel()
        window = window[window < rows]
        order[filled:filled + window.shape[0]] = window[rng.permutation(window.shape[0])]
        filled += window.shape[0]
    return order


def progress_crossed(end, done, steps, every):
    """Whether the ``done`` steps that ended at step ``end`` (its count of steps taken)
    passed a progress point: every ``every`` steps, and the epoch's last step (when
    ``steps``, the epoch's count, is known)."""
    last = (end - 1) % every
    return end == steps or last == every - 1 or last <= done - 2


class EpochPlan:
    """The steps of one epoch over ``order`` (every row's index, in the epoch's order)
    in global batches of ``batch_size`` rows per rank.

    ``replica``: the model's replica (its rank and world size); ``chunk_steps``: steps
    per captured multi-step graph (1: none). ``shard_rows``: with shards (each rank its own
    rows, ``order`` this rank's), every rank's row count; every rank then has the same
    number of steps (checked before) and a global batch is every rank's batch of that
    step, in rank order."""

    def __init__(self, order, batch_size, replica, chunk_steps=1, shard_rows=None):
        self.batch_size = batch_size
        self.world_size = replica.world_size
        self.replica = replica
        # Samples of the global epoch.
        self.rows_total = int(order.shape[0]) if shard_rows is None else int(sum(shard_rows))
        self._shard_rows = None if shard_rows is None else numpy.asarray(shard_rows)
        if shard_rows is not None or not replica.shares_batches:
            self.order, self.steps, last = order, -(-int(order.shape[0]) // batch_size), None
        else:
            self.order, self.steps, last = rank_order(order, batch_size, replica.world_size,
                                                      replica.rank)
        self.rows = int(self.order.shape[0])  # this rank's rows in the epoch
        self._last = last
        self._full_share, _ = rank_share([batch_size] * replica.world_size, replica)
        self.full_steps = self._count_full_steps()
        self.chunks = self.full_steps // chunk_steps if chunk_steps > 1 else 0
        self.chunk_steps = chunk_steps

    def _count_full_steps(self):
        """Steps at whose every rank holds ``batch_size`` rows with the full share."""
        if self._shard_rows is not None:
            return int(self._shard_rows.min()) // self.batch_size
        return self.rows // self.batch_size if self._last is None else self.steps - 1

    def _step(self, step):
        """``(share, global rows)`` of step ``step`` (one batch)."""
        b = self.batch_size
        if step < self.full_steps:
            return self._full_share, b * self.world_size
        if self._shard_rows is not None:  # every rank its own rows of the step
            return rank_share(numpy.clip(self._shard_rows - step * b, 0, b), self.replica)
        if self._last is None:  # batches not shared out (alone): this step's rows
            return rank_share([min(self.rows - step * b, b)] * self.world_size, self.replica)
        # The last, short global batch: each rank a contiguous part of it (rank_order).
        return split_batch(self._last[2], self.replica)[2], self._last[2]

    def __iter__(self):
        k, b = self.chunk_steps, self.batch_size
        for i in range(self.chunks):
            yield Segment(i * k, k, None, None, self._full_share, True, k * b,
                          k * b * self.world_size)
        for step in range(self.chunks * k, self.steps):
            start, stop = min(self.rows, step * b), min(self.rows, (step + 1) * b)
            share, total = self._step(step)
            # The last global batch never replays a full batch's graph: a rank may hold
            # batch_size rows of it with another share and offset.
            replayable = stop - start == b and step < self.full_steps
            yield Segment(step, 1, start, stop, share, replayable, stop - start, total)
