"""Honest timing: warm-up runs, then the median of repeats, with the device synchronised
before every clock read."""
from __future__ import annotations

import statistics
import time


def measure(fn, sync=lambda: None, warmup=1, repeats=5, min_time=0.0):
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    With ``min_time``, each timed run calls ``fn`` as many times as needed to last at
    least that long (the per-call median is returned), so tiny kernels are not drowned
    in timer noise.
    """
    for _ in range(warmup):
        fn()
    sync()
    inner = 1
    if min_time:
        while True:
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            if time.perf_counter() - start >= min_time or inner >= 1 << 16:
                break
            inner *= 2
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times), times
