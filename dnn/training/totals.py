"""An epoch's running sums on the device, read back in one transfer."""
from __future__ import annotations


class Totals:
    """The loss times the rows, then each metric's slots (counts or sums), in one device
    buffer: ``loss`` and ``metrics[i]`` are views into it."""

    def __init__(self, backend, metrics, dtype):
        self.backend = backend
        self.buffer = backend.zeros((1 + sum(m.slots for m in metrics),), dtype)
        self.loss = self.buffer[0:1]
        self.metrics, offset = [], 1
        for metric in metrics:
            self.metrics.append(self.buffer[offset:offset + metric.slots])
            offset += metric.slots

    def read(self):
        return [float(v) for v in self.backend.to_numpy(self.buffer)]
