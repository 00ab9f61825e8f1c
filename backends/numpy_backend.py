"""NumPy backend: the CPU path.

The base class is the reference; this class overrides what it can do without
temporaries. The optimizer updates matter most: the reference Adam allocates several
buffer-sized temporaries per step (fresh pages each time), which cost as much as all
the GEMMs of a 784-1024-1024-10 step. Here every update runs in place, in chunks that
stay in cache, with one reused scratch buffer per thread.
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy

from ..kernels import cpu as cpu_kernels
from ..kernels import reference

from .base import LEAKY_RELU_SLOPE, Backend

# Elements per chunk: five float32 chunks of 256K (p, g, m, v, scratch) fit in L2/L3.
_CHUNK = 1 << 18
# Below this, the thread hand-off costs more than the second core saves.
_PARALLEL_MIN = 1 << 19


def _numba_wanted():
    return os.environ.get("DNN_NUMBA", "1") != "0" and cpu_kernels.available()


class NumpyBackend(Backend):
    """``NumpyBackend(accelerate=None)``: with ``accelerate`` (default: when numba is
    installed and ``DNN_NUMBA`` is not "0") the optimizer updates of buffers of at least
    ``kernels.cpu.MIN_SIZE`` parameters run as fused numba kernels from
    ``kernels.cpu``; otherwise as in-place NumPy passes."""

    name = "numpy"
    xp = numpy

    def __init__(self, accelerate=None):
        super().__init__()
        self.accelerated = _numba_wanted() if accelerate is None else bool(accelerate)
        if self.accelerated and not cpu_kernels.available():
            raise RuntimeError("NumpyBackend: accelerate=True needs numba: "
                               "pip install numba (or pip install '.[numba]' in the dnn checkout)")
        self._local = threading.local()
        self._pool = None
        self._lock = threading.Lock()
        self._max_threads = None  # set by limit_threads
        self._blas_limit = None  # threadpoolctl's handle, kept while the limit holds

    def __repr__(self):
        return f"NumpyBackend(accelerate={self.accelerated})"

    def describe(self):
        return {**super().describe(), "accelerated": self.accelerated}

    def _fused(self, params):
        return self.accelerated and params.shape[0] >= cpu_kernels.MIN_SIZE

    @property
    def fused_update_min_size(self):
        return cpu_kernels.MIN_SIZE if self.accelerated else 1

    def to_numpy(self, x):
        return numpy.asarray(x)

    # ----------------------------------------------------------------- scratch space
    def _scratch(self, size, dtype):
        bufs = self._local.__dict__.setdefault("bufs", {})
        key = numpy.dtype(dtype)
        buf = bufs.get(key)
        if buf is None or buf.size < size:
            buf = bufs[key] = numpy.empty(max(size, _CHUNK), dtype=key)
        return buf[:size]

    def _threads(self):
        cores = max(1, min(os.cpu_count() or 1, 4))
        return cores if self._max_threads is None else min(cores, self._max_threads)

    def limit_threads(self, threads):
        """Use at most ``threads`` threads from now on: in BLAS (through threadpoolctl,
        when it is installed), in numba's kernels and in this backend's own pool. For
        processes that share a machine's cores (data-parallel ranks). Returns the
        pools that were limited."""
        threads = max(1, int(threads))
        self._max_threads = threads
        limited = ["dnn"]
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            self._blas_limit = threadpool_limits(limits=threads, user_api="blas")
            limited.append("BLAS")
        if self.accelerated:
            import numba

            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            limited.append("numba")
        return limited

    def _chunked(self, n, work):
        """Run ``work(lo, hi)`` over [0, n) in cache-sized chunks, split across threads
        for large buffers (NumPy ufuncs release the GIL)."""
        threads = self._threads() if n >= _PARALLEL_MIN else 1
        if threads == 1:
            for lo in range(0, n, _CHUNK):
                work(lo, min(n, lo + _CHUNK))
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads(), thread_name_prefix="dnn-cpu")
        part = -(-n // threads)

        def run(i):
            stop = min(n, (i + 1) * part)
            for lo in range(i * part, stop, _CHUNK):
                work(lo, min(stop, lo + _CHUNK))

        for future in [self._pool.submit(run, i) for i in range(threads)]:
            future.result()

    # -------------------------------------------------------------------- activations
    def activation(self, name, x, out=None, negative_slope=LEAKY_RELU_SLOPE):
        if name in self._FORWARD_IN_PLACE:
            return getattr(self, self._FORWARD_IN_PLACE[name])(x, out)
        return super().activation(name, x, out=out, negative_slope=negative_slope)

    # The hot activations without a temporary (the reference allocates its result).
    _FORWARD_IN_PLACE = {"relu": "_relu", "tanh": "_tanh", "sigmoid": "_sigmoid"}

    @staticmethod
    def _relu(x, out):
        return numpy.maximum(x, 0, out=out)

    @staticmethod
    def _tanh(x, out):
        return numpy.tanh(x, out=out)

    def activation_backward(self, name, dy, x, y, out=None, negative_slope=LEAKY_RELU_SLOPE):
        if name in self._BACKWARD_IN_PLACE:
            if out is None:
                out = numpy.empty_like(dy)
            return getattr(self, self._BACKWARD_IN_PLACE[name])(dy, y, out)
        return super().activation_backward(name, dy, x, y, out=out,
                                           negative_slope=negative_slope)

    _BACKWARD_IN_PLACE = {"relu": "_relu_backward", "sigmoid": "_sigmoid_backward",
                          "tanh": "_tanh_backward"}

    def _relu_backward(self, dy, y, out):
        """dx = dy where y > 0 else 0, with no temporaries (y >= 0 always)."""
        mask = self._scratch(y.size, numpy.bool_).reshape(y.shape)
        numpy.greater(y, 0, out=mask)
        return numpy.multiply(dy, mask, out=out)

    def _sigmoid_backward(self, dy, y, out):
        tmp = self._scratch(y.size, y.dtype).reshape(y.shape)
        numpy.subtract(1, y, out=tmp)
        tmp *= y
        return numpy.multiply(dy, tmp, out=out)

    def _tanh_backward(self, dy, y, out):
        tmp = self._scratch(y.size, y.dtype).reshape(y.shape)
        numpy.multiply(y, y, out=tmp)
        numpy.subtract(1, tmp, out=tmp)
        return numpy.multiply(dy, tmp, out=out)

    def _sigmoid(self, x, out):
        """Stable logistic as exp(min(x, 0)) / (1 + exp(-|x|)): neither exp can overflow,
        tiny probabilities keep their relative precision, and there is no masked copy
        (``copyto(where=)`` cost 1.1 ms on a 256x1024 batch, against ~0.3 ms for this)."""
        if out is None:
            out = numpy.empty_like(x)
        denom = self._scratch(x.size, x.dtype).reshape(x.shape)
        numpy.abs(x, out=denom)
        numpy.negative(denom, out=denom)
        numpy.exp(denom, out=denom)
        denom += 1
        numpy.minimum(x, 0, out=out)
        numpy.exp(out, out=out)
        return numpy.divide(out, denom, out=out)

    # --------------------------------------------------------------------- optimizers
    # The plain updates of SGD, RMSprop and Adam (nothing of Keras' apply but a uniform
    # weight decay) run as hand-written in-place passes; every other update, and those
    # with ``options``, as one numba kernel or the reference chunk by chunk.
    def sgd_update(self, params, grads, momentums, lr, momentum=0.0, nesterov=False,
                   weight_decay=0.0, skip=None, options=None):
        if options is not None:
            return self._update("sgd", params, grads, {"momentum": momentums}, None, lr,
                                weight_decay, skip, options, momentum=momentum,
                                nesterov=nesterov)
        if self._skipped(skip):
            return params
        lr = float(lr[0])
        if self._fused(params):
            cpu_kernels.sgd_update(params, grads, momentums, lr, momentum, nesterov,
                                   weight_decay)
            return params
        decay = 1 - lr * weight_decay if weight_decay else None

        def work(lo, hi):
            p, g = params[lo:hi], grads[lo:hi]
            if decay is not None:
                p *= decay
            s = self._scratch(hi - lo, p.dtype)
            numpy.multiply(g, lr, out=s)  # s = lr g
            if not momentum:
                p -= s
                return
            b = momentums[lo:hi]
            b *= momentum
            b -= s  # b = m b - lr g
            if nesterov:
                numpy.multiply(b, momentum, out=g)  # grads are the step's scratch
                g -= s
                p += g
            else:
                p += b

        self._chunked(params.shape[0], work)
        return params

    def adam_update(self, params, grads, m, v, step, lr, beta_1=0.9, beta_2=0.999,
                    epsilon=1e-7, weight_decay=0.0, decoupled_weight_decay=True, skip=None,
                    v_hat=None, options=None):
        if v_hat is not None or options is not None:
            return super().adam_update(params, grads, m, v, step, lr, beta_1, beta_2, epsilon,
                                       weight_decay, decoupled_weight_decay, skip, v_hat,
                                       options)
        if self._skipped(skip):
            return params
        t, lr = int(step[0]), float(lr[0])
        if self._fused(params):
            cpu_kernels.adam_update(params, grads, m, v, t, lr, beta_1, beta_2, epsilon,
                                    weight_decay, decoupled_weight_decay)
            return params
        alpha = lr * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        one_b1, one_b2 = 1 - beta_1, 1 - beta_2
        decay = 1 - lr * weight_decay if (weight_decay and decoupled_weight_decay) else None
        l2 = weight_decay if (weight_decay and not decoupled_weight_decay) else None

        def work(lo, hi):
            p, g, mm, vv = params[lo:hi], grads[lo:hi], m[lo:hi], v[lo:hi]
            s = self._scratch(hi - lo, p.dtype)
            if l2 is not None:
                numpy.multiply(p, l2, out=s)
                g += s
            numpy.subtract(g, mm, out=s)  # m += (1-b1)(g-m)
            s *= one_b1
            mm += s
            numpy.multiply(g, g, out=s)  # v += (1-b2)(g^2-v)
            s -= vv
            s *= one_b2
            vv += s
            if decay is not None:
                p *= decay
            numpy.sqrt(vv, out=s)  # p -= alpha m / (sqrt(v) + eps)
            s += epsilon
            numpy.divide(mm, s, out=s)
            s *= alpha
            p -= s

        self._chunked(params.shape[0], work)
        return params

    def rmsprop_update(self, params, grads, sq_avg, lr, rho=0.9, epsilon=1e-7,
                       momentum=0.0, velocity=None, weight_decay=0.0, skip=None,
                       average_gradient=None, options=None):
        if average_gradient is not None or options is not None:
            return super().rmsprop_update(params, grads, sq_avg, lr, rho, epsilon, momentum,
                                          velocity, weight_decay, skip, average_gradient,
                                          options)
        if self._skipped(skip):
            return params
        lr = float(lr[0])
        if self._fused(params):
            cpu_kernels.rmsprop_update(params, grads, sq_avg, velocity, lr, rho, epsilon,
                                       momentum, weight_decay)
            return params
        decay = 1 - lr * weight_decay if weight_decay else None

        def work(lo, hi):
            p, g, sq = params[lo:hi], grads[lo:hi], sq_avg[lo:hi]
            if decay is not None:
                p *= decay
            s = self._scratch(hi - lo, p.dtype)
            numpy.multiply(g, g, out=s)  # sq = rho sq + (1 - rho) g^2
            s *= 1 - rho
            sq *= rho
            sq += s
            numpy.add(sq, epsilon, out=s)  # the increment lr g / sqrt(sq + eps)
            numpy.sqrt(s, out=s)
            g *= lr  # grads are the step's scratch
            numpy.divide(g, s, out=s)
            if momentum:
                vel = velocity[lo:hi]
                vel *= momentum
                vel += s
                p -= vel
            else:
                p -= s

        self._chunked(params.shape[0], work)
        return params

    def _update(self, rule, params, grads, state, step, lr, weight_decay, skip, options,
                **hyperparameters):
        """Any rule with Keras' apply: one numba kernel, or the reference over cache-sized
        chunks written back in place (each chunk's temporaries stay in cache)."""
        if self._skipped(skip):
            return params
        number, rate = self._step_number(step, options), float(lr[0])
        if self._fused(params):
            cpu_kernels.apply_update(rule, params, grads, state, number, rate,
                                     hyperparameters, **self._kernel_options(options,
                                                                             weight_decay))
            return params
        whole = params.shape[0]

        def work(lo, hi):
            part = {name: (buf if buf is None or buf.shape != (whole,) else buf[lo:hi])
                    for name, buf in state.items()}
            p, new, accumulator, ema = reference.apply(
                rule, params[lo:hi], grads[lo:hi], dict(part), number, rate, numpy,
                **self._apply_arguments(options, weight_decay, lo, hi), **hyperparameters)
            params[lo:hi] = p
            for name, buf in part.items():
                if buf is not None and new.get(name) is not None:
                    buf[...] = new[name]
            if options is not None:
                for buf, value in ((options.accumulator, accumulator), (options.ema, ema)):
                    if buf is not None:
                        buf[lo:hi] = value

        self._chunked(whole, work)
        return params

    @staticmethod
    def _kernel_options(options, weight_decay):
        """``cpu.apply_update``'s keyword arguments: per-segment values as they are."""
        wd = numpy.asarray([weight_decay], numpy.float64) if weight_decay else None
        if options is None:
            return {"wd": wd}
        segments = options.segments
        return {"grad_acc": options.accumulator, "accumulate": options.accumulation_steps,
                "clipvalue": options.clipvalue, "scale": options.clip_scales,
                "groups": None if segments is None else segments.groups,
                "wd": wd if options.weight_decay is None else options.weight_decay,
                "ema": options.ema, "ema_momentum": options.ema_momentum,
                "ema_every": options.ema_overwrite_frequency}

    # The formulas of old files only (see Backend.sgd_legacy_update): the passes they
    # trained with, unchanged.
    def sgd_legacy_update(self, params, grads, velocity, lr, momentum=0.0, nesterov=False,
                          weight_decay=0.0, skip=None):
        if self._skipped(skip):
            return params
        lr = float(lr[0])
        if self._fused(params):
            cpu_kernels.sgd_legacy_update(params, grads, velocity, lr, momentum, nesterov,
                                          weight_decay)
            return params

        def work(lo, hi):
            p, g = params[lo:hi], grads[lo:hi]
            if weight_decay:
                s = self._scratch(hi - lo, p.dtype)
                numpy.multiply(p, weight_decay, out=s)
                g += s  # grads are scratch for the step; overwriting them saves a pass
            if momentum:
                vel = velocity[lo:hi]
                vel *= momentum
                vel += g
                if nesterov:
                    s = self._scratch(hi - lo, p.dtype)
                    numpy.multiply(vel, momentum, out=s)
                    s += g
                    s *= lr
                    p -= s
                    return
                g = vel
            s = self._scratch(hi - lo, p.dtype)
            numpy.multiply(g, lr, out=s)
            p -= s

        self._chunked(params.shape[0], work)
        return params

    def rmsprop_legacy_update(self, params, grads, sq_avg, lr, rho=0.9, epsilon=1e-7,
                              momentum=0.0, velocity=None, weight_decay=0.0, skip=None):
        if self._skipped(skip):
            return params
        lr = float(lr[0])
        if self._fused(params):
            cpu_kernels.rmsprop_legacy_update(params, grads, sq_avg, velocity, lr, rho,
                                              epsilon, momentum, weight_decay)
            return params

        def work(lo, hi):
            p, g, sq = params[lo:hi], grads[lo:hi], sq_avg[lo:hi]
            s = self._scratch(hi - lo, p.dtype)
            if weight_decay:
                numpy.multiply(p, weight_decay, out=s)
                g += s
            numpy.multiply(g, g, out=s)  # sq = rho sq + (1-rho) g^2
            s -= sq
            s *= 1 - rho
            sq += s
            numpy.sqrt(sq, out=s)
            s += epsilon
            numpy.divide(g, s, out=s)
            if momentum:
                vel = velocity[lo:hi]
                vel *= momentum
                s *= lr
                vel += s
                p -= vel
            else:
                s *= lr
                p -= s

        self._chunked(params.shape[0], work)
        return params
