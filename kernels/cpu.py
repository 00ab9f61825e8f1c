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

import numpy

from . import reference

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
    def sgd(p, g, b, lr, momentum, nesterov, decay):
        for i in prange(p.shape[0]):
            pi = p[i] * decay
            if momentum != 0:
                bi = b[i] * momentum - g[i] * lr
                b[i] = bi
                pi += bi * momentum - g[i] * lr if nesterov else bi
            else:
                pi -= g[i] * lr
            p[i] = pi

    @jit
    def rmsprop(p, g, sq, vel, lr, rho, one_rho, eps, momentum, decay):
        for i in prange(p.shape[0]):
            gi = g[i]
            si = rho * sq[i] + one_rho * (gi * gi)
            sq[i] = si
            increment = lr * gi / math.sqrt(si + eps)
            if momentum != 0:
                vi = momentum * vel[i] + increment
                vel[i] = vi
                p[i] = p[i] * decay - vi
            else:
                p[i] = p[i] * decay - increment

    @jit
    def sgd_legacy(p, g, vel, lr, momentum, nesterov, wd):
        for i in prange(p.shape[0]):
            gi = g[i] + wd * p[i]
            if momentum != 0:
                vi = momentum * vel[i] + gi
                vel[i] = vi
                gi = gi + momentum * vi if nesterov else vi
            p[i] -= lr * gi

    @jit
    def rmsprop_legacy(p, g, sq, vel, lr, rho, eps, momentum, wd):
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

    rule_step = _rules(numba)

    @jit
    def apply(rule, p, g, s0, s1, s2, c, lr, one, grad_acc, k, update, clipvalue, scale,
              groups, wd, ema, ema_momentum, ema_rest, overwrite):
        accumulating, grouped = grad_acc.shape[0] > 0, groups.shape[0] > 0
        scaled, decaying, averaging = scale.shape[0] > 0, wd.shape[0] > 0, ema.shape[0] > 0
        for i in prange(p.shape[0]):
            seg = groups[i // GROUP] if grouped else 0
            pi = p[i]
            if accumulating and not update:
                grad_acc[i] += g[i]
            else:
                gi = g[i]
                if accumulating:
                    gi = (gi + grad_acc[i]) / k
                    grad_acc[i] = 0
                if clipvalue > 0:
                    gi = -clipvalue if gi < -clipvalue else (clipvalue if gi > clipvalue else gi)
                if scaled:
                    gi *= scale[seg]
                if decaying:
                    pi *= one - lr * wd[seg]
                pi = rule_step(rule, i, pi, gi, s0, s1, s2, c, lr, one)
            if averaging:
                e = ema_momentum * ema[i] + ema_rest * pi
                ema[i] = e
                if overwrite:
                    pi = e
            p[i] = pi

    return {"adam": adam, "sgd": sgd, "rmsprop": rmsprop, "sgd_legacy": sgd_legacy,
            "rmsprop_legacy": rmsprop_legacy, "apply": apply}


# The rules of the generic kernel, by code; ``c`` holds each one's constants of the step
# (see ``_constants``), s0..s2 its state (empty where it has fewer).
RULE_CODES = {"sgd": 0, "rmsprop": 1, "adam": 2, "nadam": 3, "adagrad": 4, "adamax": 5,
              "lion": 6}
GROUP = reference.SEGMENT_GROUP


def _rules(numba):
    """One element of each rule (as reference.RULES), for the generic kernel."""

    @numba.njit(inline="always")
    def rule_step(rule, i, p, g, s0, s1, s2, c, lr, one):
        if rule == 0:  # sgd: c = momentum, nesterov
            if c[0] != 0:
                b = s0[i] * c[0] - g * lr
                s0[i] = b
                return p + (b * c[0] - g * lr if c[1] != 0 else b)
            return p - g * lr
        if rule == 1:  # rmsprop: c = rho, 1 - rho, eps, momentum; s2 = average (centered)
            sq = c[0] * s0[i] + c[1] * (g * g)
            s0[i] = sq
            d = sq + c[2]
            if s2.shape[0] > 0:
                a = c[0] * s2[i] + c[1] * g
                s2[i] = a
                d = sq - a * a + c[2]
            increment = lr * g / math.sqrt(d)
            if c[3] != 0:
                v = c[3] * s1[i] + increment
                s1[i] = v
                return p - v
            return p - increment
        if rule == 2:  # adam: c = alpha, 1 - beta_1, 1 - beta_2, eps; s2 = v_hat (AMSGrad)
            m = s0[i] + (g - s0[i]) * c[1]
            v = s1[i] + (g * g - s1[i]) * c[2]
            s0[i], s1[i] = m, v
            if s2.shape[0] > 0:
                v = max(s2[i], v)
                s2[i] = v
            return p - m * c[0] / (math.sqrt(v) + c[3])
        if rule == 3:  # nadam: c = 1-b1, 1-b2, u_next, 1-u_next prod, 1-u_t, 1-prod, 1-b2^t, eps
            m = s0[i] + (g - s0[i]) * c[0]
            v = s1[i] + (g * g - s1[i]) * c[1]
            s0[i], s1[i] = m, v
            m_hat = c[2] * m / c[3] + c[4] * g / c[5]
            return p - m_hat * lr / (math.sqrt(v / c[6]) + c[7])
        if rule == 4:  # adagrad: c = eps
            a = s0[i] + g * g
            s0[i] = a
            return p - lr * g / math.sqrt(a + c[0])
        if rule == 5:  # adamax: c = 1 - beta_1, beta_2, 1 - beta_1^t, eps
            m = s0[i] + (g - s0[i]) * c[0]
            u = max(c[1] * s1[i], abs(g))
            s0[i], s1[i] = m, u
            return p - lr * m / (c[2] * (u + c[3]))
        # lion: c = beta_1, 1 - beta_1, beta_2, 1 - beta_2
        m = s0[i]
        d = m * c[0] + g * c[1]
        s0[i] = m * c[2] + g * c[3]
        return p - lr * (one if d > 0 else (-one if d < 0 else d))

    return rule_step


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


def sgd_update(p, g, momentums, lr, momentum, nesterov, weight_decay):
    """Keras 3's SGD with decoupled weight decay, in place."""
    cast = p.dtype.type
    b = momentums if momentums is not None else p[:0]
    _kernel("sgd", p.shape[0])(p, g, b, cast(lr), cast(momentum), bool(nesterov),
                               cast(1 - lr * weight_decay))


def rmsprop_update(p, g, sq, velocity, lr, rho, epsilon, momentum, weight_decay):
    """Keras 3's RMSprop (not centered) with decoupled weight decay, in place."""
    cast = p.dtype.type
    vel = velocity if velocity is not None else p[:0]
    _kernel("rmsprop", p.shape[0])(p, g, sq, vel, cast(lr), cast(rho), cast(1 - rho),
                                   cast(epsilon), cast(momentum), cast(1 - lr * weight_decay))


def sgd_legacy_update(p, g, velocity, lr, momentum, nesterov, weight_decay):
    """The old formula (reference.sgd_legacy), only to resume old files."""
    cast = p.dtype.type
    vel = velocity if velocity is not None else p[:0]
    _kernel("sgd_legacy", p.shape[0])(p, g, vel, cast(lr), cast(momentum), bool(nesterov),
                                      cast(weight_decay))


def rmsprop_legacy_update(p, g, sq, velocity, lr, rho, epsilon, momentum, weight_decay):
    """The old formula (reference.rmsprop_legacy), only to resume old files."""
    cast = p.dtype.type
    vel = velocity if velocity is not None else p[:0]
    _kernel("rmsprop_legacy", p.shape[0])(p, g, sq, vel, cast(lr), cast(rho), cast(epsilon),
                                          cast(momentum), cast(weight_decay))


# The state each rule's generic kernel takes as s0, s1, s2 (reference.RULES' names).
RULE_STATES = {"sgd": ("momentum",), "rmsprop": ("sq_avg", "velocity", "average_gradient"),
               "adam": ("m", "v", "v_hat"), "nadam": ("m", "v"), "adagrad": ("accumulator",),
               "adamax": ("m", "u"), "lion": ("momentum",)}


def _constants(rule, state, t, update, hyper):
    """The rule's constants of update ``t`` (float64), and Nadam's running product
    written for it (when this call updates)."""
    b1, b2, eps = hyper.get("beta_1"), hyper.get("beta_2"), hyper.get("epsilon")
    if rule == "sgd":
        return [hyper.get("momentum", 0.0), float(bool(hyper.get("nesterov")))]
    if rule == "rmsprop":
        return [hyper["rho"], 1 - hyper["rho"], eps, hyper.get("momentum", 0.0)]
    if rule == "adam":
        return [hyper["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t), 1 - b1, 1 - b2, eps]
    if rule == "nadam":
        decay = reference.NADAM_DECAY
        u_t, u_next = b1 * (1.0 - 0.5 * decay ** t), b1 * (1.0 - 0.5 * decay ** (t + 1))
        u_product = state["u_product"]
        product = u_product[(t - 1) % 2] * b1 * (1.0 - 0.5 * decay ** t)
        if update:
            u_product[t % 2] = product
        return [1 - b1, 1 - b2, u_next, 1 - product * u_next, 1 - u_t, 1 - product,
                1 - b2 ** t, eps]
    if rule == "adagrad":
        return [eps]
    if rule == "adamax":
        return [1 - b1, b2, 1 - b1 ** t, eps]
    return [b1, 1 - b1, b2, 1 - b2]


def apply_update(rule, p, g, state, step, lr, hyper, grad_acc=None, accumulate=1,
                 clipvalue=None, scale=None, groups=None, wd=None, ema=None,
                 ema_momentum=0.0, ema_every=0):
    """One call (numbered ``step``) of Keras 3's apply around ``rule``, in place, as
    ``reference.apply`` with per-segment ``scale`` and ``wd`` (``groups``: the segment
    of each SEGMENT_GROUP elements, None for one segment). Absent buffers go to the
    kernel empty, so one compiled kernel serves every combination."""
    cast, empty = p.dtype.type, p[:0]
    k = max(1, int(accumulate or 1))
    update, done = step % k == 0, (step - 1) // k
    # A step that only accumulates uses none of them (its t may be 0).
    c = numpy.asarray(_constants(rule, state, max(1, step // k), update, {**hyper, "lr": lr}),
                      p.dtype)
    states = [state.get(name) for name in RULE_STATES[rule]]
    s0, s1, s2 = [empty if s is None else s for s in states + [None] * (3 - len(states))]
    momentum = ema_momentum if done != 0 else 0.0
    _kernel("apply", p.shape[0])(
        RULE_CODES[rule], p, g, s0, s1, s2, c, cast(lr), cast(1),
        empty if grad_acc is None or k == 1 else grad_acc, cast(k), bool(update),
        cast(clipvalue or 0), empty if scale is None else scale,
        numpy.zeros(0, numpy.int32) if groups is None else groups,
        empty if wd is None else wd, empty if ema is None else ema, cast(momentum),
        cast(1 - momentum), bool(ema_every and (done + 1) % ema_every == 0))
