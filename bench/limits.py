"""The limits each figure is compared with, measured in the same run: the floor of a
training step (its GEMMs plus its optimizer update, and nothing else) and the device's
copy bandwidth."""
from __future__ import annotations

import numpy

from dnn.utils.validation import check_dtype

from .timing import measure


class StepFloor:
    """The floor of one training step of ``spec``: exactly the GEMMs dnn issues
    (shapes, transposes and dtypes: under a mixed policy the operands are bfloat16 and
    the weight gradients float32) plus one Adam update over the model's parameters,
    captured once (a CUDA graph on a GPU) and timed on the device's clock. A step does
    all of this and more, so a step time can only approach the floor.

    Each ``sample()`` times the floor, and the GEMMs alone, once more. The benchmark
    samples between the epochs it times, so that the floor and the steps see the same
    machine, and keeps the least of the samples (``floor_s``, ``gemm_s``): noise only
    ever adds time. A floor timed apart, or as a median, could come out above a step
    measured in a quieter moment ("of floor" over 100%)."""

    def __init__(self, backend, spec, batch, dtype):
        self.backend = backend
        gemms_and_update, gemms = _floor_passes(backend, spec, batch, dtype)
        self._timed = {}
        for key, fn in (("floor", gemms_and_update), ("gemm", gemms)):
            fn()  # creates library handles and workspaces before the capture
            graph = backend.capture(fn)
            graph.replay()
            self._timed[key] = (graph, _calls_for(backend, graph.replay))
        self.samples = {"floor": [], "gemm": []}

    def sample(self):
        for key, (graph, inner) in self._timed.items():
            self.samples[key].append(self.backend.time_device(graph.replay, inner))

    @property
    def floor_s(self):
        return min(self.samples["floor"])

    @property
    def gemm_s(self):
        return min(self.samples["gemm"])


def _floor_passes(backend, spec, batch, dtype):
    """``(GEMMs and the update, GEMMs alone)``: the floor's two passes, on operands of
    the step's shapes."""
    weight_dtype, compute_dtype = check_dtype(dtype)
    rng = numpy.random.default_rng(0)
    calls = []
    for a_shape, b_shape, trans_a, trans_b in spec.gemm_calls(batch):
        a = backend.asarray(rng.standard_normal(a_shape), dtype=compute_dtype)
        b = backend.asarray(rng.standard_normal(b_shape), dtype=compute_dtype)
        m = a_shape[1] if trans_a else a_shape[0]
        n = b_shape[0] if trans_b else b_shape[1]
        # x^T @ dz is a weight gradient: it lands in the weight dtype
        out = backend.empty((m, n), weight_dtype if trans_a else compute_dtype)
        calls.append((a, b, out, trans_a, trans_b))
    size = spec.params()
    params, grads = (backend.asarray(rng.standard_normal(size) * 0.01, dtype=weight_dtype)
                     for _ in range(2))
    m, v = backend.zeros((size,), weight_dtype), backend.zeros((size,), weight_dtype)
    step = backend.asarray(numpy.ones(1, numpy.int64))
    lr = backend.asarray(numpy.full(1, 1e-9), dtype=weight_dtype)

    def gemms():
        for a, b, out, trans_a, trans_b in calls:
            backend.gemm(a, b, out=out, trans_a=trans_a, trans_b=trans_b)

    def gemms_and_update():
        gemms()
        backend.adam_update(params, grads, m, v, step, lr)

    return gemms_and_update, gemms


def step_floor(backend, spec, batch, dtype, repeats=5):
    """``(floor seconds, GEMM-only seconds)`` of one training step of ``spec`` on its
    own: the least of ``repeats`` samples of a ``StepFloor``."""
    floor = StepFloor(backend, spec, batch, dtype)
    for _ in range(repeats):
        floor.sample()
    return floor.floor_s, floor.gemm_s


def _calls_for(backend, fn, min_time=0.05):
    """Calls per timing so that one timing lasts at least ``min_time`` seconds."""
    seconds = backend.time_device(fn, 1)
    return max(1, min(1000, int(min_time / max(seconds, 1e-7))))


def copy_bandwidth(backend, nbytes=None, repeats=5):
    """Bytes per second of a device-to-device copy, counting the read and the write.

    The buffer is larger than any CPU cache (or 1 GiB on a GPU), so this is memory
    bandwidth, not cache bandwidth."""
    if nbytes is None:
        nbytes = (256 << 20) if backend.name == "numpy" else (1 << 30)
    n = nbytes // 4
    src = backend.zeros((n,), "float32")
    dst = backend.empty((n,), "float32")
    seconds, _ = measure(lambda: backend.copy(src, out=dst), sync=backend.synchronize,
                         warmup=2, repeats=repeats)
    return 2 * n * 4 / seconds
