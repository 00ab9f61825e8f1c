"""Where a step's batch comes from. The epoch plan names positions in the epoch's
order; a source fills the step's fixed batch buffers (which a captured step reads)
with the rows at those positions.

``ArraySource``: checked device arrays (``dnn.training.data_adapter``), gathered on the
device, so a multi-step captured graph can gather its own batches.
"""
from __future__ import annotations


class ArraySource:
    """Device arrays of one data set: features, targets, and per-sample weights (or
    None), the same number of rows each."""

    # A multi-step graph may gather this source's batches itself (see ``gather``).
    device_gather = True

    def __init__(self, x, y, weights=None):
        self.x, self.y, self.weights = x, y, weights
        self.arrays = tuple(a for a in (x, y, weights) if a is not None)
        self.rows = int(x.shape[0])

    def batch_buffers(self, model, rows):
        """The fixed batch buffers of ``rows`` rows, one per array, from the model's
        buffer cache: the same objects at every step of that size."""
        be = model.backend
        key = ("batch",) + tuple((a.shape[1:], a.dtype) for a in self.arrays)
        return model.buffers.get(rows, key, lambda r: tuple(
            be.empty((r,) + tuple(a.shape[1:]), a.dtype) for a in self.arrays))

    def take(self, backend, order, start, stop, batch):
        """Fill ``batch`` with the rows at positions ``start:stop`` of ``order`` (a
        device int64 array)."""
        for source, target in zip(self.arrays, batch):
            backend.take_rows(source, order[start:stop], out=target)
        return batch

    def gather(self, backend, order, cursor, batch):
        """Fill ``batch`` with the rows at the positions from ``cursor[0]`` (device
        memory) of ``order``: what a captured multi-step graph runs."""
        for source, target in zip(self.arrays, batch):
            backend.gather_rows(source, order, cursor, out=target)
        return batch

    def rows_between(self, start, stop):
        """``(x, y, weights)`` of the rows ``start:stop``, as views."""
        return tuple(None if a is None else a[start:stop] for a in (self.x, self.y,
                                                                     self.weights))

    def split(self, at):
        """``(first, rest)``: the rows before ``at`` and from it, as sources of views."""
        return (ArraySource(*self.rows_between(0, at)),
                ArraySource(*self.rows_between(at, self.rows)))
