"""The physical limits each figure is compared with, measured in the same run:
the GEMM rate at the exact shapes (and transposes) of a training step, and the
device's copy bandwidth."""
from __future__ import annotations

import numpy

from .timing import measure


def gemm_step_time(backend, spec, batch, dtype, repeats=5):
    """Median seconds for all GEMMs of one step, through ``backend.gemm`` with
    preallocated outputs: the floor that a step of this model cannot beat."""
    rng = numpy.random.default_rng(0)
    calls = []
    for a_shape, b_shape, ta, tb in spec.gemm_calls(batch):
        a = backend.asarray(rng.standard_normal(a_shape), dtype=dtype)
        b = backend.asarray(rng.standard_normal(b_shape), dtype=dtype)
        m = a_shape[1] if ta else a_shape[0]
        n = b_shape[0] if tb else b_shape[1]
        calls.append((a, b, backend.empty((m, n), dtype), ta, tb))

    def run():
        for a, b, out, ta, tb in calls:
            backend.gemm(a, b, out=out, trans_a=ta, trans_b=tb)

    seconds, _ = measure(run, sync=backend.synchronize, warmup=2, repeats=repeats,
                         min_time=0.05)
    return seconds


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
