"""The consumer's side of a streamed epoch: batches that loader threads prepared
(``prefetch``) in staging slots (``staging``), turned into the segments the training
loop runs (``epoch_plan.Segment``) and into the arrays each step reads.

``PlannedFeed``: the segments are an ``EpochPlan``'s, known before the epoch (host
arrays, whose rows are known). ``ArrivingFeed``: the segments are made as the batches
arrive (a user's batch source), and across data-parallel ranks every step's batch is
agreed first (``Replica.all_values``): every rank's rows, so that each scales its loss
gradient by its share of the global batch; whether the data ended, on every rank at
the same step or else an error on every rank (never a hang); and, when ranks are meant
to hold the same batches, that they do.
"""
from __future__ import annotations

import collections

import numpy

from .epoch_plan import WHOLE, Segment, rank_share, split_batch
from .prefetch import INTERRUPTED_JOIN_S, JOIN_S
from .sources import batch_buffers, buffers_key
from .staging import batch_into

# One batch a loader prepared: this rank's ``rows`` of it, in its staging ``slot`` (the
# prefetcher's ring index), or ``arrays`` the backend holds already (None: in the
# slot); ``fingerprint`` and ``total`` (the batch's rows on the rank that read it) for
# the agreement between ranks; ``index`` names it in errors.
Staged = collections.namedtuple("Staged", "rows slot arrays fingerprint total index")
ENDED = "ended"  # what a loader returns once its iterable is exhausted


class StreamFeed:
    """Batches taken from ``prefetcher``, landed through ``landing`` (as arrays of its
    ``specs``). ``chunk_cache``: the source's fixed buffers for multi-step chunks."""

    def __init__(self, model, landing, prefetcher, chunk_cache):
        self.model, self.landing, self.prefetcher = model, landing, prefetcher
        self.specs, self._chunk_cache = landing.specs, chunk_cache
        self._key = buffers_key(self.specs)
        self._held = []  # what the current segment reads
        self.ended_early = False  # the data ended before the epoch's known steps
        # Whether leaving the feed stops its loaders (else they serve the next epoch).
        self.owns_prefetcher = True
        self.after_close = None  # called once the loaders stopped (a sequence's hook)

    def take(self):
        """The next batch, or None once the loaders' tasks or the data are exhausted."""
        got = self.prefetcher.get()
        if got is None:
            return None
        staged, slot = got
        if staged is ENDED:
            self.prefetcher.release()
            return None
        return staged._replace(slot=slot)

    def release_held(self):
        for staged in self._held:
            if staged.arrays is None:
                self.landing.release(staged.slot)
            self.prefetcher.release()
        self._held = []

    def _arrays(self, staged):
        if staged.arrays is not None:
            return staged.arrays
        return self.landing.batch(staged.slot, staged.rows)

    def empty(self):
        return False

    def batch_buffers(self, rows):
        return batch_buffers(self.model, rows, self.specs, self._key)

    def batch(self, segment, fixed):
        """The step's batch: the slot's arrays, copied into the fixed batch buffers when
        ``fixed`` (a captured step reads those)."""
        staged = self._held[0]
        arrays = self._arrays(staged)
        if fixed:
            arrays = batch_into(self.model.backend, arrays, self.batch_buffers(staged.rows))
        return arrays

    def chunk(self, segment):
        """``(arrays, order, reset)`` a chunk's captured body gathers from: the chunk's
        batches copied one after another into fixed buffers, read in order from a
        cursor that restarts at every chunk."""
        rows = self._held[0].rows
        total = rows * len(self._held)
        cached = self._chunk_cache.get(total)
        if cached is None:
            be = self.model.backend
            cached = self._chunk_cache[total] = (
                tuple(be.empty((total,) + tuple(shape), dtype) for shape, dtype in self.specs),
                be.asarray(numpy.arange(total, dtype=numpy.int64)))
        arrays, order = cached
        for i, staged in enumerate(self._held):
            batch_into(self.model.backend, self._arrays(staged), arrays, i * rows)
        return arrays, order, True

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        self.release_held()
        wait = INTERRUPTED_JOIN_S if kind is KeyboardInterrupt else JOIN_S
        if self.owns_prefetcher and not self.prefetcher.close(wait):
            self.landing.abandoned = True  # a loader may still write its slots
        if self.after_close is not None:
            self.after_close()
        return False


class StreamEvaluation(StreamFeed):
    """The batches of evaluate or predict, streamed: ``(x, y, weights)`` each (None
    where the source has none). ``rows_total``: the rows every rank evaluates together
    (None: each rank its own, to be added up), known once the batches are done."""

    def __init__(self, model, landing, prefetcher, rows_total):
        super().__init__(model, landing, prefetcher, {})
        self.rows_total = rows_total
        self._counted = rows_total is None or rows_total >= 0

    def __iter__(self):
        total = 0
        while True:
            staged = self.take()
            if staged is None:
                break
            self._held = [staged]
            arrays = self._arrays(staged)
            yield tuple(arrays) + (None,) * (3 - len(arrays))
            total += staged.total
            self.release_held()
        if not self._counted:  # every rank read every batch (and took its share)
            self.rows_total = total


class PlannedFeed(StreamFeed):
    """The segments of ``plan``; the loaders prepare every step's rows in step order."""

    def __init__(self, model, landing, prefetcher, chunk_cache, plan):
        super().__init__(model, landing, prefetcher, chunk_cache)
        self.plan = plan
        self.steps = plan.steps

    def __iter__(self):
        for segment in self.plan:
            for _ in range(segment.steps):
                self._held.append(self.take())
            yield segment
            self.release_held()


class ArrivingFeed(StreamFeed):
    """Segments made as batches arrive: at most ``steps`` (None: until the data ends),
    ``chunk_steps`` full batches at a time when the steps replay as one graph.
    ``shard``: across ranks, each rank's batches are its own (else every rank reads
    the same batches, and takes its share of each)."""

    def __init__(self, model, landing, prefetcher, chunk_cache, steps, chunk_steps, shard):
        super().__init__(model, landing, prefetcher, chunk_cache)
        self.steps, self.chunk_steps, self.shard = steps, chunk_steps, shard
        self.replica = model.replica
        self._full = None  # (rows, share, global rows) of the first step: a full batch
        self._pending = collections.deque()  # (staged, share, global rows), agreed
        self._ended = False

    def _fill(self, step, k):
        """Agree batches until ``k`` are pending, the data ends or the epoch is full."""
        pending = self._pending
        while not self._ended and len(pending) < k and (self.steps is None or
                                                        step + len(pending) < self.steps):
            agreed = self._next(step + len(pending))
            if agreed is None:
                self._ended = True
            else:
                pending.append(agreed)

    def empty(self):
        """Whether the data gives no batch at all this epoch (asked before it starts)."""
        self._fill(0, 1)
        return not self._pending

    def __iter__(self):
        pending = self._pending
        step = 0
        k = self.chunk_steps
        while True:
            self._fill(step, k)
            if not pending:
                break
            if k > 1 and len(pending) == k and all(self._is_full(p) for p in pending):
                self._held = [p[0] for p in pending]
                pending.clear()
                yield self._segment(step, k)
                step += k
            else:
                staged, share, total = pending.popleft()
                self._held = [staged]
                yield Segment(step, 1, 0, staged.rows, share, self._is_full(
                    (staged, share, total)), staged.rows, total)
                step += 1
            self.release_held()
        self.ended_early = self.steps is not None and step < self.steps

    def __exit__(self, *exc):
        # Batches agreed and never run (a stop mid-epoch) go back to their slots.
        self._held += [p[0] for p in self._pending]
        self._pending.clear()
        return super().__exit__(*exc)

    def _segment(self, step, k):
        rows, share, total = self._full
        return Segment(step, k, None, None, share, True, rows * k, total * k)

    def _is_full(self, agreed):
        staged, share, total = agreed
        return self._full is not None and (staged.rows, share, total) == self._full

    def _next(self, step):
        """``(staged, share, global rows)`` of the next step's batch, agreed across
        ranks; None when the data ended (on every rank)."""
        staged = self.take()
        # Ranks in lockstep take every decision at the same step, the end of the data
        # and each rank's share included: the replica says so, not a count of ranks.
        if self.replica.lockstep:
            agreed = self._agree(staged, step)
        elif staged is None:
            return None
        else:  # alone: no one to agree with, the batch is the step's whole batch
            agreed = (staged, WHOLE, staged.rows)
        if agreed is not None and self._full is None:
            self._full = (agreed[0].rows, agreed[1], agreed[2])
        return agreed

    def _agree(self, staged, step):
        replica = self.replica
        mine = [-1, 0] if staged is None else [staged.total, staged.fingerprint]
        table = replica.all_values(mine)
        held = [int(r[0]) for r in table]
        if all(h < 0 for h in held):
            return None
        if any(h < 0 for h in held):
            raise ValueError(
                f"fit: the data of rank{'s' * (sum(h < 0 for h in held) > 1)} "
                f"{', '.join(str(r) for r, h in enumerate(held) if h < 0)} ended after "
                f"{step} batches, while other ranks had more: every rank must give the "
                f"same number of batches per epoch (pass steps_per_epoch= to stop every "
                f"rank at the same step)")
        if self.shard:  # the global batch: every rank's batch of this step, in rank order
            share, total = rank_share(held, replica)
            return staged, share, total
        if len({(int(r[0]), int(r[1])) for r in table}) > 1:
            raise ValueError(
                f"fit: batch {staged.index}: expected the same batch on every rank (shard="
                f"False: every rank passes the same data and takes its share of each "
                f"batch); got {', '.join(f'rank {r}: {h} rows' for r, h in enumerate(held))}"
                f"{' with different values' if len(set(held)) == 1 else ''}. Pass "
                f"shard=True when each rank reads its own part of the data")
        return staged, split_batch(staged.total, replica)[2], staged.total
