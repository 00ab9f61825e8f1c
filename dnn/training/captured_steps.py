"""Training steps captured once and replayed (CUDA graphs on CuPy).

A step of a given batch size runs eagerly the first time: that creates every buffer and
workspace it touches, so the capture that follows allocates nothing. From then on the
step is replayed. The captured graph lives in the model's buffer cache beside the
buffers it points into, so the two are created and dropped together. The learning rate
is read from device memory, so a new rate or a schedule replays the same graph.

A graph replays what was bound when it was captured: the batch buffers, the NaN
guard's flags (or none), the loss and metric totals, the data set a multi-step body
gathers from. The caller names all of it as the step's ``binding``, and a step whose
binding differs from the graph's is captured again: a second ``fit`` with sample
weights, without the NaN guard, or with another data set never replays a graph of the
first. Graphs that hold one fit call's data set (multi-step bodies) are dropped when
the call ends (``release_call_graphs``).
"""
from __future__ import annotations

import warnings

_OWNER = "captured_step"


class _Entry:
    def __init__(self):
        self.graph = None
        self.binding = ()  # what the graph was captured with (see the module docstring)
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

    def run(self, rows, step, binding, steps=1):
        """Run ``step()``, a body of ``steps`` training steps on batches of ``rows``,
        eagerly the first time and replayed after that; returns what the body returned
        when it last ran. ``binding``: every array (and setting) the body is bound to;
        a binding other than the graph's captures again."""
        cache, owner = self.model.buffers, (_OWNER, steps)
        entry = cache.peek(rows, owner)
        if entry is None:  # the first time: create every buffer, eagerly
            cache.get(rows, owner, lambda _: _Entry())
            return step()
        if entry.eager:
            return step()
        if entry.graph is None or not _same(entry.binding, binding):
            entry.graph = None
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
                entry.eager = True
                return step()
            entry.binding = tuple(binding)
        elif hasattr(entry.graph, "verify"):
            # Where a replay can be checked (the host's recorded graphs), check that
            # this step would run exactly what was captured.
            entry.graph.verify(step)
        entry.graph.replay()
        return entry.output[0]

    def release_call_graphs(self):
        """Drop the multi-step graphs: they gather from one fit call's data set."""
        self.model.buffers.discard(lambda owner: isinstance(owner, tuple) and
                                   owner[0] == _OWNER and owner[1] > 1)

    def clear(self):
        self.model.buffers.discard(lambda owner: isinstance(owner, tuple) and
                                   owner[0] == _OWNER)


def _same(a, b):
    """Arrays (anything with a shape) by identity, settings by value."""
    return len(a) == len(b) and all(
        x is y or (not hasattr(x, "shape") and not hasattr(y, "shape") and x == y)
        for x, y in zip(a, b))
