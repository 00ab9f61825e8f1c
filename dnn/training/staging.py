"""Staging slots: where a loader thread puts a batch, and how it reaches the device.

A ring of slots, one per batch in flight (``dnn.training.prefetch``). Each slot holds
host buffers (``Backend.host_empty``: page-locked on a GPU) that the loader fills with a
batch already cast to the dtypes the step reads, and, on a device whose arrays are not
host arrays, device buffers of the same shapes. There the loader also queues the copy
to the device on a stream of its own (``Backend.upload_stream``), beside the step, and
two events per slot order it:

- ``uploaded``: the copy from the slot's host buffers is done. The step's stream waits
  for it before reading the device buffers, and the loader waits for it (on the host)
  before writing the host buffers again;
- ``consumed``: the steps that read the slot's device buffers are done. The copy stream
  waits for it before copying the slot's next batch in.

On the host (NumPy) the host buffers are the batch itself: no copy, no event. Buffers
grow to the largest batch seen and are then reused, so a stream allocates nothing per
step. A captured step must read fixed buffers: the training loop copies a slot's batch
into its batch buffers (``batch_into``) on the compute stream, after the wait.
"""
from __future__ import annotations

import numpy


def _specs(specs):
    return tuple((tuple(shape), numpy.dtype(dtype)) for shape, dtype in specs)


class Landing:
    """The ring of ``ring`` slots for batches of arrays described by ``specs``: one
    ``(trailing shape, dtype)`` per array (x, then y and the sample weights when the
    batches carry them), on ``backend``. ``abandoned``: set when a loader that writes
    its slots could not be stopped; it is then never handed out again (``Landings``)."""

    def __init__(self, backend, specs, ring):
        self.backend = backend
        self.specs = _specs(specs)
        self.ring = ring
        self.abandoned = False
        # Where the step computes on host arrays, they are the batch.
        self.on_device = not backend.is_native(numpy.empty(0))
        self._host = [None] * ring
        self._device = [None] * ring
        self._uploaded = [None] * ring
        self._consumed = [None] * ring
        self._stream = backend.upload_stream() if self.on_device else None

    # ---------------------------------------------------------- the loader's side
    def host_buffers(self, slot, rows):
        """The slot's host buffers, ``rows`` rows of each array, for a loader to fill;
        waits until the slot's previous batch has left them."""
        self.backend.host_wait(self._uploaded[slot])
        buffers = self._host[slot]
        if buffers is None or buffers[0].shape[0] < rows:
            buffers = self._host[slot] = tuple(
                self.backend.host_empty((rows,) + shape, dtype) for shape, dtype in self.specs)
        return tuple(b[:rows] for b in buffers)

    def send(self, slot, rows):
        """After a loader filled the slot's first ``rows`` rows: on a device, queue their
        copy to the slot's device buffers once the steps that read them last are done."""
        if not self.on_device:
            return
        be = self.backend
        device = self._device[slot]
        if device is None or device[0].shape[0] < rows:
            capacity = self._host[slot][0].shape[0]
            device = self._device[slot] = tuple(
                be.empty((capacity,) + shape, dtype) for shape, dtype in self.specs)
        be.wait_event(self._consumed[slot], self._stream)
        for host, target in zip(self._host[slot], device):
            be.upload(host[:rows], target[:rows], self._stream)
        self._uploaded[slot] = be.record_event(self._stream, self._uploaded[slot])

    # -------------------------------------------------------- the consumer's side
    def batch(self, slot, rows, start=0):
        """The slot's rows ``start:start + rows`` as arrays the step computes on: the
        compute stream waits for their copy first."""
        if not self.on_device:
            return tuple(b[start:start + rows] for b in self._host[slot])
        self.backend.wait_event(self._uploaded[slot])
        return tuple(d[start:start + rows] for d in self._device[slot])

    def release(self, slot):
        """The steps that read the slot are queued: mark where they end, so that the
        slot's next copy waits for them."""
        if self.on_device:
            self._consumed[slot] = self.backend.record_event(None, self._consumed[slot])


class Landings:
    """A source's landings, one per ``(ring, specs)``, reused by its epochs and
    evaluations (their buffers stay allocated); an abandoned one is replaced."""

    def __init__(self, backend):
        self.backend = backend
        self._landings = {}

    def get(self, ring, specs):
        key = (ring, _specs(specs))
        landing = self._landings.get(key)
        if landing is None or landing.abandoned:
            landing = self._landings[key] = Landing(self.backend, specs, ring)
        return landing


def batch_into(backend, batch, buffers, offset=0):
    """Copy the arrays of ``batch`` into the fixed ``buffers`` (rows from ``offset``), on
    the compute stream: what a captured step reads. Returns the filled views."""
    rows = batch[0].shape[0]
    out = []
    for source, target in zip(batch, buffers):
        view = target[offset:offset + rows]
        backend.copy(source, out=view)
        out.append(view)
    return tuple(out)
