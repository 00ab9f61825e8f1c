"""Batch sources: batches a user's object makes, read (``batch_reader``) and staged by
loader threads ahead of the step.

- ``SequenceSource``: anything with ``__len__`` (or Keras 3's ``num_batches``, None for
  an endless one) and ``__getitem__(i)`` returning a batch, as Keras 3's ``PyDataset``.
  An epoch reads every batch once, in order, or with ``shuffle`` in the order
  ``epoch_order(len, seed, epoch)`` (batches are never split); ``on_epoch_begin()`` and
  ``on_epoch_end()`` are called around each epoch's training steps when it has them.
  Its ``workers`` (as a PyDataset's) threads read batches side by side, and
  ``max_queue_size`` of them are prepared ahead.
- ``IterableSource``: a generator, an iterator, or an iterable such as a torch
  ``DataLoader`` (its tensors taken through DLPack). An epoch is one pass: ``iter()``
  of it, so a generator gives one pass in all. With ``steps_per_epoch`` an epoch is
  that many batches of a stream that goes on across epochs, as in Keras: a re-iterable
  object starts a new pass whenever one ends; a generator that ends stops training.

With ``steps_per_epoch`` a sequence also streams across epochs: epoch ``e`` takes the
batches ``e * steps_per_epoch`` onwards of the passes laid end to end (pass ``p`` in the
order ``epoch_order(len, seed, p)``), so a resumed run reads exactly what it would
have. Across data-parallel ranks each rank reads every batch and takes its share of it
(``shard=False``), or each rank's object gives that rank's own batches (``shard=True``).
"""
from __future__ import annotations

import functools
import itertools

from . import batch_reader
from .epoch_plan import epoch_order, evaluation_rows, split_batch
from .prefetch import PREFETCH_DEPTH, Prefetcher
from .sources import on_device, step_specs
from .staging import Landings
from .stream_feed import ENDED, ArrivingFeed, Staged, StreamEvaluation


class BatchSource:
    """What the two kinds share: the reader, the staging of a read batch, the
    evaluation batches. ``first``: the ``Read`` of the data's first batch (it set the
    model's input width and what every batch holds)."""

    kind = 2  # what ranks compare: every rank must take the same path
    rows = None  # unknown until the batches are read

    def __init__(self, model, reader, first, steps_per_epoch, length):
        self.model, self.reader = model, reader
        self.weighted = reader.carries_weights
        self.specs = step_specs(model, first.x, first.y, self.weighted)
        self.steps_per_epoch, self.length = steps_per_epoch, length
        self.shard = False
        self.depth, self.workers = PREFETCH_DEPTH, 1
        self._landings = Landings(model.backend)
        self._chunks = {}

    def steps(self, batch_size, replica):
        return self.steps_per_epoch or self.length

    def agreement(self, model, shard, batch_size):
        """Every rank must give the same number of batches per epoch (unknown: -1; the
        ranks then agree at every step, see ``stream_feed.ArrivingFeed``)."""
        self.shard = shard
        steps = self.steps(batch_size, model.replica)
        return {"batches per epoch": -1 if steps is None else steps}

    def _feed(self, tasks, stage, steps, chunk_steps):
        ring = self.depth + chunk_steps
        landing = self._landings.get(ring, self.specs)
        prefetcher = Prefetcher(functools.partial(stage, landing), tasks, ring,
                                self.workers, self._describe)
        return ArrivingFeed(self.model, landing, prefetcher, self._chunks, steps, chunk_steps,
                            self.shard)

    def _evaluation_feed(self, tasks, stage, split):
        specs = self.specs if split else self.specs[:1]
        ring = self.depth + 1
        landing = self._landings.get(ring, specs)
        prefetcher = Prefetcher(functools.partial(stage, landing, split=split), tasks, ring,
                                self.workers, self._describe)
        counted = evaluation_rows(None, self.model.replica, split, self.shard)[2]
        return StreamEvaluation(self.model, landing, prefetcher, counted)

    @staticmethod
    def _describe(index):
        return f"batch {index}"

    def _stage_read(self, landing, read, index, slot, split=True):
        """Put a read batch into ``slot``: this rank's share of its rows when every rank
        reads the same batches (``split_batch``), all of them otherwise. Runs in a loader
        thread."""
        total = read.x.shape[0]
        start, stop, _ = split_batch(total, self.model.replica) if split and not self.shard \
            else (0, total, None)
        arrays = (read.x, read.y, read.weights)[:len(landing.specs)]
        if self.model.backend.is_native(read.x) and landing.on_device:
            # A batch the backend holds already (a CUDA tensor on the model's GPU):
            # converted on the device, as arrays are.
            device = on_device(self.model.backend, arrays, landing.specs)
            return Staged(stop - start, slot, tuple(a[start:stop] for a in device),
                          read.fingerprint, total, index)
        buffers = landing.host_buffers(slot, stop - start)
        batch_reader.stage_into(batch_reader.Read(*(a[start:stop] for a in arrays),
                                                  *(None,) * (3 - len(arrays)), None), buffers)
        landing.send(slot, stop - start)
        return Staged(stop - start, slot, None, read.fingerprint, total, index)

    def close(self):
        """The end of a fit: nothing outlives it here (see ``IterableSource``)."""


class SequenceSource(BatchSource):
    """A Keras-style sequence of batches: see the module docstring."""

    def __init__(self, model, sequence, reader, first, steps_per_epoch, length):
        super().__init__(model, reader, first, steps_per_epoch, length)
        self.sequence = sequence
        workers = getattr(sequence, "workers", 1)
        self.workers = workers if isinstance(workers, int) and workers > 1 else 1
        depth = getattr(sequence, "max_queue_size", None)
        self.depth = depth if isinstance(depth, int) and depth > 0 else PREFETCH_DEPTH

    def _indices(self, epoch, shuffle):
        """The sequence indices epoch ``epoch`` reads, in order."""
        n, per_epoch = self.length, self.steps_per_epoch
        if n is None:  # endless: steps_per_epoch of them at a time, in turn
            return list(range(epoch * per_epoch, (epoch + 1) * per_epoch))
        if per_epoch is None:
            return epoch_order(n, self.model.seed, epoch, shuffle).tolist()
        first = epoch * per_epoch
        out = []
        for pass_ in range(first // n, (first + per_epoch - 1) // n + 1):
            order = epoch_order(n, self.model.seed, pass_, shuffle)
            out += order[max(first - pass_ * n, 0):first + per_epoch - pass_ * n].tolist()
        return out

    def epoch(self, settings, epoch):
        hook = getattr(self.sequence, "on_epoch_begin", None)
        if callable(hook):
            hook()
        indices = self._indices(epoch, settings.shuffle)
        feed = self._feed(indices, self._stage, len(indices), settings.chunk_steps)
        end = getattr(self.sequence, "on_epoch_end", None)
        feed.after_close = end if callable(end) else None
        return feed

    def evaluation(self, model, batch_size, steps=None, split=True):
        n = self.length if steps is None else steps if self.length is None else \
            min(steps, self.length)
        if n is None:
            raise ValueError("steps: expected the number of batches to evaluate for an "
                             "endless sequence (num_batches None); got None")
        return self._evaluation_feed(range(n), self._stage, split)

    def _stage(self, landing, index, slot, split=True):
        read = self.reader.read(self.sequence[index], index)
        return self._stage_read(landing, read, index, slot, split)


class IterableSource(BatchSource):
    """A generator or an iterable of batches: see the module docstring. ``iterator``:
    the one the adapter took ``first_batch`` (the raw batch) from."""

    def __init__(self, model, data, reader, first, steps_per_epoch, iterator, first_batch):
        try:
            length = len(data)  # a DataLoader's batches per pass
        except TypeError:
            length = None
        super().__init__(model, reader, first, steps_per_epoch, length)
        self.data = data
        self.one_shot = iter(data) is data  # a generator or an iterator
        self._iterator = itertools.chain([first_batch], iterator)
        self._fresh = True  # the first pass, the adapter's, is still to be read
        self._position = 0  # batches taken from the current pass
        self._stream = None  # (landing, prefetcher, chunk steps) of a stream across epochs

    def _start_pass(self):
        """Before an epoch or an evaluation that reads a pass of its own: a re-iterable
        object starts a new one; a generator goes on where it was."""
        if not self._fresh and not self.one_shot:
            self._iterator, self._position = None, 0
        self._fresh = False

    def _next_raw(self, restart):
        """``(index, batch)`` of the next batch, or None when the pass ended (it then
        stays ended until a new pass starts). With ``restart`` a re-iterable's pass that
        ended after giving batches is followed by a new one at once."""
        for _ in range(2):
            if self._iterator is None:
                self._iterator, self._position = iter(self.data), 0
            try:
                batch = next(self._iterator)
            except StopIteration:
                renew = restart and not self.one_shot and self._position > 0
                self._iterator = None if renew else iter(())
                if renew:
                    continue
                return None
            self._position += 1
            return self._position - 1, batch
        return None

    def _stage(self, landing, task, slot, split=True, restart=False):
        got = self._next_raw(restart)
        if got is None:
            return ENDED
        index, batch = got
        read = self.reader.read(batch, index)
        return self._stage_read(landing, read, index, slot, split)

    def epoch(self, settings, epoch):
        if self.steps_per_epoch is None:  # one pass per epoch
            self._start_pass()
            return self._feed(itertools.count(), self._stage, self.length,
                              settings.chunk_steps)
        if self._stream is None:  # one stream across epochs: its loaders outlive epochs
            self._fresh = False
            feed = self._feed(itertools.count(), functools.partial(self._stage, restart=True),
                              self.steps_per_epoch, settings.chunk_steps)
            self._stream = (feed.landing, feed.prefetcher, settings.chunk_steps)
            feed.owns_prefetcher = False
            return feed
        landing, prefetcher, chunk = self._stream
        feed = ArrivingFeed(self.model, landing, prefetcher, self._chunks,
                            self.steps_per_epoch, chunk, self.shard)
        feed.owns_prefetcher = False
        return feed

    def evaluation(self, model, batch_size, steps=None, split=True):
        """A pass (a re-iterable's from its start; a generator's from where it is), or
        ``steps`` batches of it (a generator's next ``steps``: none is read ahead)."""
        self._start_pass()
        tasks = itertools.count() if steps is None else range(steps)
        return self._evaluation_feed(tasks, self._stage, split)

    def close(self):
        if self._stream is not None:
            self._stream[1].close()
            self._stream = None
