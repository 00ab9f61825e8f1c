"""Batches prepared ahead of the step, in background threads (the loaders).

A ``Prefetcher`` runs ``produce(task, slot)`` for each task of an iterator, in order of
the tasks, at most a ring of slots ahead of its consumer: task ``t`` fills slot ``t %
ring``, and starts only once the consumer has released the task that last used that
slot. So the memory a loader holds is the ring's few batches, whatever the data's size.

One thread runs the tasks in order (a generator can only be advanced by one thread at a
time); a pool of several runs a sequence's batches or an array's gathers side by side,
and the results still come back in task order. An error in a loader thread is raised in
the consumer's thread, with its traceback (the frames where it happened follow the
consumer's) and a note naming the thread and the task; the loaders then stop. Closing
(at the end of an epoch, on an error, on Ctrl-C) stops them: threads that do not finish
their current task in time are left behind as daemons, and ``close`` says so, so that
their slots are never handed to anyone else.
"""
from __future__ import annotations

import collections
import queue
import threading

PREFETCH_DEPTH = 2  # batches a source's loaders prepare ahead of the step (by default)
JOIN_S = 5.0  # how long close() waits for a loader thread to finish its current task
# ... and after Ctrl-C, which should end the run at once: a loader still in a slow
# task is left to finish it (its thread ends then, a daemon meanwhile).
INTERRUPTED_JOIN_S = 0.2


class _Result:
    __slots__ = ("done", "value", "error", "task")

    def __init__(self, task):
        self.done = threading.Event()
        self.value = self.error = None
        self.task = task


class Prefetcher:
    """``Prefetcher(produce, tasks, ring, workers=1, describe=str)``: see the module
    docstring. ``describe(task)`` names a task in an error's note ("batch 3")."""

    def __init__(self, produce, tasks, ring, workers=1, describe=str, name="dnn-loader"):
        self.produce, self.describe = produce, describe
        self.ring = max(1, int(ring))
        self._tasks = iter(tasks)
        self._queue = queue.SimpleQueue()
        self._pending = collections.deque()  # results submitted and not yet taken
        self._submitted = self._released = self._taken = 0
        self._exhausted = self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(max(1, int(workers)))]
        for thread in self._threads:
            thread.start()
        self._submit()

    # ------------------------------------------------------------------ consumer
    def get(self):
        """``(value, slot)`` of the next task, waiting for it; ``None`` once the tasks
        are exhausted. Raises what ``produce`` raised."""
        self._submit()
        if not self._pending:
            if self._exhausted or self._closed:
                return None
            raise RuntimeError(f"Prefetcher: the consumer holds all {self.ring} slots; "
                               f"release one before taking the next")
        result = self._pending.popleft()
        result.done.wait()
        slot = self._taken % self.ring
        self._taken += 1
        if result.error is not None:
            error = result.error
            if hasattr(error, "add_note"):  # Python 3.11+
                error.add_note(f"(raised in dnn's loader thread while preparing "
                               f"{self.describe(result.task)})")
            raise error
        return result.value, slot

    def release(self):
        """The oldest slot the consumer took is free again."""
        self._released += 1
        self._submit()

    def _submit(self):
        while not self._exhausted and not self._closed and \
                self._submitted < self._released + self.ring:
            try:
                task = next(self._tasks)
            except StopIteration:
                self._exhausted = True
                return
            result = _Result(task)
            self._pending.append(result)
            self._queue.put((self._submitted % self.ring, result))
            self._submitted += 1

    # ------------------------------------------------------------------- workers
    def _work(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            slot, result = item
            if not self._closed:
                try:
                    result.value = self.produce(result.task, slot)
                except BaseException as exc:  # handed to the consumer, who raises it
                    result.error = exc
            result.done.set()

    def close(self, wait=JOIN_S):
        """Stop the loaders, waiting at most ``wait`` seconds for each. Returns whether
        every thread stopped: when one is still in its task, its slot may be written
        after this returns."""
        if self._closed:
            return self._stopped
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(wait)
        self._stopped = not any(t.is_alive() for t in self._threads)
        return self._stopped

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        self.close(INTERRUPTED_JOIN_S if kind is KeyboardInterrupt else JOIN_S)
        return False
