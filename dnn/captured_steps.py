"""Training steps captured once and replayed (CUDA graphs on CuPy).

A step of a given batch size runs eagerly the first time: that creates every buffer and
workspace it touches, so the capture that follows allocates nothing. From then on the
step is replayed. The captured graph lives in the model's buffer cache beside the
buffers it points into, so the two are created and dropped together. The learning rate
is read from device memory, so a new rate or a schedule replays the same graph.

A body of several steps (``steps_per_execution``) also reads arrays that are not the
model's own, the data set of one fit call: they are the capture's "pins", a replay
needs the same ones, and ``release_pins`` drops such graphs when the call ends.
"""
from __future__ import annotations

import warnings

_OWNER = "captured_step"


class _Entry:
    def __init__(self):
        self.graph = None
        self.pins = ()  # arrays outside the model's buffers that the graph reads
        self.output = [None]  # the body's result (set when the body runs)
        self.eager = False  # capture failed under "auto": this batch size runs eagerly


class CapturedSteps:
    """Capture-and-replay of ``step()`` per batch size, for one compiled model.

    ``fallback``: when capture fails, warn and run eagerly (``cuda_graph="auto"``)
    rather than raise (``cuda_graph=True``).
    """

    def __init__(self, model):
        self.model = model
        self.fallback = True

    def run(self, rows, step, steps=1, pins=()):
        """Run ``step()``, a body of ``steps`` training steps on batches of ``rows``,
        eagerly the first time and replayed after that; returns what the body returned
        when it last ran. ``pins``: the arrays outside the model's buffers that the body
        reads; a new set captures again."""
        cache, owner = self.model.buffers, (_OWNER, steps)
        entry = cache.peek(rows, owner)
        if entry is None:  # the first time: create every buffer, eagerly
            cache.get(rows, owner, lambda _: _Entry())
            return step()
        if entry.eager:
            return step()
        if entry.graph is None or not _same(entry.pins, pins):
            output = entry.output

            def body():
                output[0] = step()

            try:
                entry.graph = self.model.backend.capture(body)
            except RuntimeError as exc:
                if not self.fallback:
                    raise
                warnings.warn(f"fit: running eagerly, the training step could not be "
                              f"captured as a CUDA graph: {exc}", RuntimeWarning, stacklevel=4)
                entry.graph, entry.eager = None, True
                return step()
            entry.pins = tuple(pins)
        entry.graph.replay()
        return entry.output[0]

    def release_pins(self):
        """Drop the graphs that read arrays outside the model's buffers."""
        self.model.buffers.discard(lambda owner: isinstance(owner, tuple) and
                                   owner[0] == _OWNER and owner[1] > 1)

    def clear(self):
        self.model.buffers.discard(lambda owner: isinstance(owner, tuple) and
                                   owner[0] == _OWNER)


def _same(a, b):
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))
