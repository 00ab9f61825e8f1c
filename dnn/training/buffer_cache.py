"""One cache per model for the device buffers whose shape depends on the batch size.

Every such buffer (each layer's workspaces, the batch gathered from the data set, the
loss gradient, mixed precision's casts) and the captured training step that points
into them live in one entry per batch size, so that they are created together, reused
by every step of that size, and dropped together: a captured CUDA graph can never
outlive a buffer it writes to.
"""
from __future__ import annotations

import collections

# Batch sizes kept: the training batch and the epoch's last partial batch, the
# validation batch and its partial one, evaluate and predict.
MAX_BATCH_SIZES = 6


class BufferCache:
    """``get(rows, owner, make)``: what ``make(rows)`` returned the first time ``owner``
    asked at this batch size. The least recently used batch size is dropped, with all
    its buffers, when a new one would exceed ``max_batch_sizes``."""

    def __init__(self, max_batch_sizes=MAX_BATCH_SIZES):
        self.max_batch_sizes = max_batch_sizes
        self._entries = collections.OrderedDict()  # rows -> {owner: buffers}
        self._last = self._last_entry = None  # the most recently used size, and its entry

    def get(self, rows, owner, make):
        if rows == self._last:  # the common case: every call of a step asks for one size
            entry = self._last_entry
        else:
            entry = self._entries.get(rows)
            if entry is None:
                if len(self._entries) >= self.max_batch_sizes:
                    self._entries.popitem(last=False)
                entry = self._entries[rows] = {}
            else:
                self._entries.move_to_end(rows)
            self._last, self._last_entry = rows, entry
        buffers = entry.get(owner)
        if buffers is None:
            buffers = entry[owner] = make(rows)
        return buffers

    def peek(self, rows, owner):
        """What ``owner`` holds at this batch size, or None; creates nothing."""
        return self._entries.get(rows, {}).get(owner)

    def discard(self, which):
        """Forget, at every batch size, the buffers of the owners ``which(owner)`` is
        true for."""
        for entry in self._entries.values():
            for owner in [o for o in entry if which(o)]:
                del entry[owner]

    def clear(self):
        self._entries.clear()
        self._last = self._last_entry = None

    def batch_sizes(self):
        return list(self._entries)
