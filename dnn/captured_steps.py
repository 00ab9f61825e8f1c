"""Training steps captured once and replayed (CUDA graphs on CuPy).

A step of a given batch size runs eagerly the first time: that creates every buffer and
workspace it touches, so the capture that follows allocates nothing. From then on the
step is replayed. The captured graph lives in the model's buffer cache beside the
buffers it points into, so the two are created and dropped together. The learning rate
is a kernel argument inside the graph: a change of rate captures again.
"""
from __future__ import annotations

import warnings

_OWNER = "captured_step"


class _Entry:
    def __init__(self):
        self.graph = None
        self.learning_rate = None
        self.output = [None]  # the step's output buffer (set when the step body runs)
        self.eager = False  # capture failed under "auto": this batch size runs eagerly


class CapturedSteps:
    """Capture-and-replay of ``step()`` per batch size, for one compiled model.

    ``fallback``: when capture fails, warn and run eagerly (``cuda_graph="auto"``)
    rather than raise (``cuda_graph=True``).
    """

    def __init__(self, model):
        self.model = model
        self.fallback = True

    def run(self, rows, step):
        """Run ``step()`` (which returns the step's output buffer) for a batch of
        ``rows``, eagerly the first time and replayed after that."""
        cache = self.model.buffers
        entry = cache.peek(rows, _OWNER)
        if entry is None:  # first step at this size: create every buffer, eagerly
            cache.get(rows, _OWNER, lambda _: _Entry())
            return step()
        if entry.eager:
            return step()
        lr = self.model.optimizer.learning_rate
        if entry.graph is None or entry.learning_rate != lr:
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
            entry.learning_rate = lr
        entry.graph.replay()
        return entry.output[0]

    def clear(self):
        self.model.buffers.discard(_OWNER)
