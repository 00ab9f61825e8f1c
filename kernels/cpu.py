"""Fused CPU kernels compiled by numba (the ``numba`` extra), an optional fast
path for the NumPy backend: each optimizer update is one parallel pass over the flat
buffers instead of about a dozen NumPy passes.

Nothing compiles at import; each kernel compiles on first use (about a second) and is
cached on disk by numba. ``available()`` says whether numba is installed, without
importing it (the import alone takes ~0.2 s, more than seed 002's whole training).
"""
from __future__ import annotations

import functools
import importlib.util
import math
import os
import threading

# Buffers smaller than this stay on the NumPy path: there the numba import and the
# thread team's start cost more than the fused pass saves.
MIN_SIZE = 1 << 16


@functools.lru_cache(maxsize=None)
def available():
    return importlib.util.find_spec("numba") is not None


# The workqueue layer cannot run two parallel kernels at once (it aborts the process),
# so launches from several Python threads take turns.
_LAUNCH = threading.Lock()


@functools.lru_cache(maxsize=None)
def _compiled():
    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        # OpenMP's worker threads spin after each kernel and starve the OpenBLAS GEMMs
        # that follow: the 784-1024-1024-10 step ran at 10.2k samples/s with "omp"
        # against 19.1k with "workqueue", which sleeps.
        numba.config.THREADING_LAYER = "workqueue"
    jit = numba.njit(parallel=True, cache=True, nogil=True)
    prange = numba.prange

    @jit
    def adam(p, g, m, v, one_b1, one_b2, alpha, eps, l2, decay):
        for i in prange(p.shape[0]):
            gi = g[i] + l2 * p[i]
            mi = m[i] + one_b1 * (gi - m[i])
            vi = v[i] + one_b2 * (gi * gi - v[i])
            m[i] = mi
            v[i] = vi
            p[i] = p[i] * decay - alpha * mi / (math.sqrt(vi) + eps)

    @jit
    def sgd(p, g, vel, lr, momentum, nesterov, wd):
        for i in prange(p.shape[0]):
            gi = g[i] + wd * p[i]
            if momentum != 0:
                vi = momentum * vel[i] + gi
                vel[i] = vi
                gi = gi + momentum * vi if nesterov else vi
            p[i] -= lr * gi

    @jit
    def rmsprop(p, g, sq, vel, lr, rho, eps, momentum, wd):
        for i in prange(p.shape[0]):
            gi = g[i] + wd * p[i]
            si = rho * sq[i] + (1 - rho) * gi * gi
            sq[i] = si
            step = gi / (math.sqrt(si) + eps)
            if momentum != 0:
                vi = momentum * vel[i] + lr * step
                vel[i] = vi
                p[i] -= vi
            else:
                p[i] -= lr * step

    return {"adam": adam, "sgd": sgd, "rmsprop": rmsprop}


def _kernel(name, n):
    kernel = _compiled()[name]

    def launch(*args):
        with _LAUNCH:
            kernel(*args)

    return launch


def adam_update(p, g, m, v, t, lr, beta_1, beta_2, epsilon, weight_decay, decoupled):
    """In place; ``t`` is the 1-based step. Scalars are cast to the buffer dtype so
    float32 buffers are updated in float32 arithmetic."""
    cast = p.dtype.type
    alpha = lr * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
    l2 = weight_decay if (weight_decay and not decoupled) else 0.0
    decay = 1 - lr * weight_decay if (weight_decay and decoupled) else 1.0
    _kernel("adam", p.shape[0])(p, g, m, v, cast(1 - beta_1), cast(1 - beta_2), cast(alpha),
                                cast(epsilon), cast(l2), cast(decay))


def sgd_update(p, g, velocity, lr, momentum, nesterov, weight_decay):
    cast = p.dtype.type
    vel = velocity if velocity is not None else p[:0]
    _kernel("sgd", p.shape[0])(p, g, vel, cast(lr), cast(momentum), bool(nesterov),
                               cast(weight_decay))


def rmsprop_update(p, g, sq, velocity, lr, rho, epsilon, momentum, weight_decay):
    cast = p.dtype.type
    vel = velocity if velocity is not None else p[:0]
    _kernel("rmsprop", p.shape[0])(p, g, sq, vel, cast(lr), cast(rho), cast(epsilon),
                                   cast(momentum), cast(weight_decay))
