"""The backend interface.

``Backend`` is complete: every method is written against ``self.xp`` (NumPy or a
NumPy-compatible module such as CuPy), so the class is both the interface and the
reference implementation. Subclasses override only what they can do faster
(thinc's ``Ops`` is the model).

Conventions
-----------
* Arrays are 2-D ``(batch, features)`` unless a docstring says otherwise.
* ``out=`` names a preallocated result buffer. When given it is filled and returned;
  it may alias an input where the docstring says so.
* Losses return ``(loss, grad)``: ``loss`` is a 0-d array on the backend's device
  (reading it to the host is the caller's choice, so no step forces a sync) and
  ``grad`` is d(mean loss)/d(input) with the input's shape.
* Optimizer updates work in place on flat 1-D buffers and may overwrite ``grads``;
  ``step`` is a 1-element int64 array on the device that the update advances, so a
  step needs no host sync.
"""
from __future__ import annotations

import math

import numpy

from ..kernels import reference

ACTIVATIONS = ("linear", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "softmax")
# gelu's backward needs the pre-activation; every other backward works from the output.
ACTIVATIONS_NEEDING_INPUT = frozenset({"gelu"})

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


def check_activation(name):
    """Return the canonical activation name or raise a ValueError listing the valid ones."""
    canonical = "linear" if name is None else name
    if canonical not in ACTIVATIONS:
        raise ValueError(
            f"activation: expected one of {', '.join(ACTIVATIONS)} (or None); got {name!r}"
        )
    return canonical


class Backend:
    """Array operations for training MLPs on one device."""

    name = "base"
    xp = numpy
    # Whether reading a value to the host is free (no device sync): NumPy yes, GPUs no.
    cheap_host_reads = True
    # Whether capture() records a device graph (CUDA graphs) rather than re-running.
    supports_graphs = False

    def __init__(self):
        self.device = "cpu"

    def __repr__(self):
        return f"{type(self).__name__}(device={self.device!r})"

    # ------------------------------------------------------------------ allocation
    def empty(self, shape, dtype="float32"):
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype="float32"):
        return self.xp.zeros(shape, dtype=dtype)

    def asarray(self, x, dtype=None):
        """Move host data (or an array of this backend) onto the device, C-contiguous."""
        return self.xp.ascontiguousarray(self.xp.asarray(x, dtype=dtype))

    def to_numpy(self, x):
        return numpy.asarray(x)

    def to_float(self, x):
        """Read a scalar array back to the host as a Python float (syncs on a GPU)."""
        return float(self.to_numpy(x))

    def copy(self, x, out=None):
        if out is None:
            return x.copy()
        self.xp.copyto(out, x)
        return out

    def cast(self, x, out):
        """Copy ``x`` into ``out`` converting the dtype (float32 -> bfloat16 rounds to
        nearest even)."""
        self.xp.copyto(out, x, casting="unsafe")
        return out

    def fill(self, x, value):
        x.fill(value)
        return x

    def view(self, flat, offset, shape):
        """A view of ``flat[offset:offset+prod(shape)]`` with ``shape`` (no copy)."""
        size = int(numpy.prod(shape, dtype=numpy.int64))
        return flat[offset:offset + size].reshape(shape)

    def take_rows(self, x, indices, out=None):
        """Gather ``x[indices]`` along axis 0 into ``out``."""
        return self.xp.take(x, indices, axis=0, out=out)

    def is_native(self, x):
        """Whether ``x`` is an array this backend computes on directly."""
        return isinstance(x, self.xp.ndarray)

    def check_array(self, x, name):
        """Raise TypeError when ``x`` is a device array this backend must not take
        silently (another library's, or another device's); host data passes."""
        module = type(x).__module__.split(".")[0]
        if module == "cupy" and self.xp.__name__ != "cupy":
            raise TypeError(f"{name}: expected host data (NumPy) for backend {self.name!r} "
                            f"({self.device}); got a cupy.ndarray on cuda:{x.device.id}. "
                            f"Copy it with x.get(), or build the model on the cupy backend")

    def synchronize(self):
        """Wait for queued device work. A no-op on the CPU."""

    def multiply(self, a, b, out=None):
        return self.xp.multiply(a, b, out=out)

    def scale(self, x, alpha, out=None):
        return self.xp.multiply(x, alpha, out=out)

    # ---------------------------------------------------------------- linear algebra
    def gemm(self, a, b, out=None, trans_a=False, trans_b=False):
        """``op(a) @ op(b)`` where ``op`` transposes when its flag is set.

        Transposes are views, so BLAS receives them as transpose flags, not copies.
        """
        a = a.T if trans_a else a
        b = b.T if trans_b else b
        if out is not None and out.dtype != a.dtype:
            # bfloat16 inputs with a float32 output (mixed precision's weight gradients):
            # the products are exact in float32, so upcasting first loses nothing.
            a, b = a.astype(out.dtype), b.astype(out.dtype)
        return self.xp.matmul(a, b, out=out)

    # ------------------------------------------------------------------ activations
    def linear(self, x, out=None):
        return x if out is None or out is x else self.copy(x, out)

    def linear_backward(self, dy, out=None):
        return dy if out is None or out is dy else self.copy(dy, out)

    def relu(self, x, out=None):
        return self.xp.maximum(x, 0, out=out)

    def relu_backward(self, dy, y, out=None):
        """dx = dy where y > 0 else 0. ``out`` may alias ``dy``."""
        return self.xp.multiply(dy, y > 0, out=out)

    def leaky_relu(self, x, alpha=0.01, out=None):
        xp = self.xp
        return self._assign(out, xp.where(x > 0, x, x * alpha).astype(x.dtype, copy=False))

    def leaky_relu_backward(self, dy, y, alpha=0.01, out=None):
        """For alpha > 0 the sign of y is the sign of the input, so y suffices."""
        xp = self.xp
        slope = xp.where(y > 0, xp.ones((), dy.dtype), xp.asarray(alpha, dtype=dy.dtype))
        return xp.multiply(dy, slope, out=out)

    def sigmoid(self, x, out=None):
        """Stable logistic: never evaluates exp of a positive number."""
        xp = self.xp
        e = xp.exp(-xp.abs(x))
        r = 1.0 / (1.0 + e)
        return self._assign(out, xp.where(x >= 0, r, e * r).astype(x.dtype, copy=False))

    def sigmoid_backward(self, dy, y, out=None):
        return self.xp.multiply(dy, y * (1 - y), out=out)

    def tanh(self, x, out=None):
        return self.xp.tanh(x, out=out)

    def tanh_backward(self, dy, y, out=None):
        return self.xp.multiply(dy, 1 - y * y, out=out)

    def gelu(self, x, out=None):
        """GELU, tanh approximation (PyTorch's ``approximate='tanh'``)."""
        xp = self.xp
        inner = _SQRT_2_OVER_PI * (x + _GELU_C * x * x * x)
        return self._assign(out, (0.5 * x * (1 + xp.tanh(inner))).astype(x.dtype, copy=False))

    def gelu_backward(self, dy, x, out=None):
        """Needs the pre-activation ``x``."""
        xp = self.xp
        inner = _SQRT_2_OVER_PI * (x + _GELU_C * x * x * x)
        t = xp.tanh(inner)
        dinner = _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * x * x)
        grad = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner
        return xp.multiply(dy, grad.astype(dy.dtype, copy=False), out=out)

    def softmax(self, x, axis=-1, out=None):
        xp = self.xp
        e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
        return xp.divide(e, xp.sum(e, axis=axis, keepdims=True), out=out)

    def softmax_backward(self, dy, y, axis=-1, out=None):
        xp = self.xp
        dot = xp.sum(dy * y, axis=axis, keepdims=True)
        return xp.multiply(y, dy - dot, out=out)

    def activation(self, name, x, out=None):
        """Apply activation ``name`` (see ``ACTIVATIONS``)."""
        return getattr(self, check_activation(name))(x, out=out)

    def activation_backward(self, name, dy, x, y, out=None):
        """Backward of activation ``name`` given input ``x`` and output ``y``.

        ``x`` is only read for activations in ``ACTIVATIONS_NEEDING_INPUT``.
        ``out`` may alias ``dy``.
        """
        name = check_activation(name)
        if name == "linear":
            return self.linear_backward(dy, out=out)
        if name in ACTIVATIONS_NEEDING_INPUT:
            return getattr(self, name + "_backward")(dy, x, out=out)
        return getattr(self, name + "_backward")(dy, y, out=out)

    def bias_activation(self, x, bias, activation, out=None):
        """Fused ``activation(x + bias)``; ``bias`` has shape ``(features,)``.

        ``out`` may alias ``x``.
        """
        z = self.xp.add(x, bias, out=out)
        return self.activation(activation, z, out=z)

    # ------------------------------------------------------------------ reductions
    def sum(self, x, axis=None, out=None, keepdims=False):
        return self.xp.sum(x, axis=axis, out=out, keepdims=keepdims)

    def mean(self, x, axis=None, out=None, keepdims=False):
        return self.xp.mean(x, axis=axis, out=out, keepdims=keepdims)

    def max(self, x, axis=None, out=None, keepdims=False):
        return self.xp.max(x, axis=axis, out=out, keepdims=keepdims)

    def argmax(self, x, axis=None, out=None):
        return self.xp.argmax(x, axis=axis, out=out)

    def logsumexp(self, x, axis=-1, keepdims=False):
        xp = self.xp
        m = xp.max(x, axis=axis, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        r = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
        return r if keepdims else xp.squeeze(r, axis=axis)

    def column_sum(self, x, out=None):
        """Sum over the batch axis: the bias gradient, shape ``(features,)``; summed in
        ``out``'s dtype (float32 for bfloat16 input under mixed precision)."""
        return self.xp.sum(x, axis=0, out=out, dtype=None if out is None else out.dtype)

    # ---------------------------------------------------------------------- losses
    def softmax_cross_entropy(self, logits, labels, grad_out=None):
        """Mean cross-entropy of softmax(logits), with its gradient w.r.t. logits.

        ``labels`` are integer class ids of shape ``(n,)`` or one-hot / probability
        rows of shape ``(n, classes)``.
        """
        xp = self.xp
        n = logits.shape[0]
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        lse = xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        log_p = shifted - lse
        grad = self._assign(grad_out, xp.exp(log_p))
        if labels.ndim == 1:
            rows = xp.arange(n)
            loss = -xp.sum(log_p[rows, labels]) / n
            grad[rows, labels] -= 1
        else:
            # d/dz of -sum(t * log_softmax(z)) is p * sum(t) - t; sum(t) is 1 for one-hot rows.
            loss = -xp.sum(labels * log_p) / n
            grad *= xp.sum(labels, axis=1, keepdims=True)
            grad -= labels
        grad /= n
        return loss.astype(logits.dtype), grad

    def sigmoid_binary_cross_entropy(self, logits, targets, grad_out=None):
        """Mean binary cross-entropy of sigmoid(logits) against targets in [0, 1]."""
        xp = self.xp
        per = xp.maximum(logits, 0) - logits * targets + xp.log1p(xp.exp(-xp.abs(logits)))
        loss = xp.mean(per)
        grad = self.sigmoid(logits, out=grad_out)
        grad -= targets
        grad /= logits.size
        return loss.astype(logits.dtype), grad

    def mean_squared_error(self, pred, target, grad_out=None):
        """Mean over all elements of (pred - target)**2."""
        xp = self.xp
        diff = xp.subtract(pred, target, out=grad_out)
        loss = xp.mean(diff * diff)
        diff *= 2.0 / pred.size
        return loss.astype(pred.dtype), diff

    # --------------------------------------------------------------------- metrics
    def count_argmax_matches(self, scores, labels):
        """Rows whose argmax equals ``labels`` (int ids, or the argmax of one-hot rows)."""
        xp = self.xp
        pred = xp.argmax(scores, axis=1)
        if labels.ndim == 2:
            labels = xp.argmax(labels, axis=1)
        return xp.sum(pred == labels)

    def count_threshold_matches(self, scores, targets, threshold):
        """Elements where ``scores > threshold`` agrees with ``targets > 0.5``."""
        return self.xp.sum((scores > threshold) == (targets > 0.5))

    def sum_abs_error(self, pred, target):
        return self.xp.sum(self.xp.abs(pred - target))

    def accumulate(self, acc, value, weight):
        """``acc += value * weight`` in place (acc: (1,) array, value: 0-d), no sync."""
        acc += value * weight
        return acc

    def all_finite(self, x):
        """0-d bool array: whether every element of ``x`` is finite (no host sync)."""
        return self.xp.all(self.xp.isfinite(x))

    def guard_finite(self, loss, step, flag, bad_step):
        """If ``loss`` is not finite and ``flag`` (int32 (1,)) is still 0, set it to 1
        and copy ``step`` (int64 (1,)) into ``bad_step``: all on the device, no sync.
        Optimizer updates given ``skip=flag`` then leave the weights alone."""
        xp = self.xp
        bad = xp.logical_and(xp.logical_not(xp.isfinite(loss)), flag == 0)
        xp.copyto(bad_step, step, where=bad)
        xp.copyto(flag, 1, where=bad)

    # ------------------------------------------------------------------ optimizers
    def clip_by_value(self, grads, clipvalue):
        return self.xp.clip(grads, -clipvalue, clipvalue, out=grads)

    def clip_by_global_norm(self, grads, clipnorm):
        """Scale ``grads`` in place so that its L2 norm is at most ``clipnorm``."""
        xp = self.xp
        norm = xp.sqrt(xp.sum(grads.astype(numpy.float64) ** 2))
        factor = xp.minimum(1.0, clipnorm / xp.maximum(norm, 1e-30))
        grads *= factor.astype(grads.dtype)
        return grads

    def increment_step(self, step, skip=None):
        """``step += 1`` on the device (int64 (1,)), unless the ``skip`` flag is set."""
        if not self._skipped(skip):
            step += 1
        return step

    def _skipped(self, skip):
        return skip is not None and bool(self.to_numpy(skip)[0])

    def sgd_update(self, params, grads, velocity, lr, momentum=0.0, nesterov=False,
                   weight_decay=0.0, skip=None):
        """SGD with optional (Nesterov) momentum and L2 weight decay, as in PyTorch.

        ``velocity`` may be None when ``momentum == 0``. Every update does nothing when
        ``skip`` (an int32 (1,) device flag from ``guard_finite``) is set.
        """
        if self._skipped(skip):
            return params
        g = grads + weight_decay * params if weight_decay else grads
        if momentum:
            velocity *= momentum
            velocity += g
            g = g + momentum * velocity if nesterov else velocity
        params -= lr * g
        return params

    def adam_update(self, params, grads, m, v, step, lr, beta_1=0.9, beta_2=0.999,
                    epsilon=1e-7, weight_decay=0.0, decoupled_weight_decay=False, skip=None):
        """Adam (Keras/TF formulation: epsilon is added to sqrt(v) before bias
        correction of the step size). With ``decoupled_weight_decay`` it is AdamW:
        ``params -= lr * weight_decay * params`` before the Adam step.
        """
        if self._skipped(skip):
            return params
        xp = self.xp
        step += 1
        t = step.astype(numpy.float64)
        alpha = (lr * xp.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)).astype(params.dtype)
        g = grads
        if weight_decay and not decoupled_weight_decay:
            g = grads + weight_decay * params
        m += (1 - beta_1) * (g - m)
        v += (1 - beta_2) * (g * g - v)
        if weight_decay and decoupled_weight_decay:
            params *= 1 - lr * weight_decay
        params -= alpha * m / (xp.sqrt(v) + epsilon)
        return params

    def rmsprop_update(self, params, grads, sq_avg, lr, rho=0.9, epsilon=1e-7,
                       momentum=0.0, velocity=None, weight_decay=0.0, skip=None):
        """RMSprop (Keras formulation: eps added outside the square root)."""
        if self._skipped(skip):
            return params
        xp = self.xp
        g = grads + weight_decay * params if weight_decay else grads
        sq_avg *= rho
        sq_avg += (1 - rho) * g * g
        step = g / (xp.sqrt(sq_avg) + epsilon)
        if momentum:
            velocity *= momentum
            velocity += lr * step
            params -= velocity
        else:
            params -= lr * step
        return params

    # ------------------------------------------------------------------------ rng
    def dropout_mask(self, shape, rate, seed, counter, dtype="float32", out=None):
        """Inverted-dropout mask: 0 with probability ``rate``, else ``1/(1-rate)``.

        A pure function of ``(seed, counter)`` (a splitmix64 hash, the same on every
        backend), so a resumed run draws the same masks. ``counter`` is an int or a
        1-element int64 device array (the optimizer's step count).
        """
        count = int(self.to_numpy(counter).reshape(-1)[0]) if hasattr(counter, "shape") \
            else int(counter)
        n = int(numpy.prod(shape))
        mask = reference.dropout_mask(n, rate, seed, count, dtype).reshape(shape)
        return self._assign(out, self.xp.asarray(mask))

    def rng(self, seed):
        """A seeded random generator producing arrays on this backend."""
        return BackendRNG(self, seed)

    # -------------------------------------------------------------------- helpers
    def _assign(self, out, value):
        if out is None:
            return value
        self.xp.copyto(out, value)
        return out

    def capture(self, fn):
        """Record ``fn`` (which must allocate nothing and never read the device) for
        replay: ``capture(fn).replay()`` runs the same work again. Here a replay just
        calls ``fn``, so code written for captured steps runs, and is tested, on every
        backend; a GPU backend records a CUDA graph instead."""
        return _Rerun(fn)

    def warmup(self, model):
        """Compile or load whatever ``model`` needs before timing. Nothing on the CPU."""

    def describe(self):
        """A dict describing the device, for summaries and benchmark records."""
        return {"backend": self.name, "device": self.device}


class _Rerun:
    """What ``Backend.capture`` returns where there are no device graphs."""

    def __init__(self, fn):
        self.fn = fn

    def replay(self):
        self.fn()


class BackendRNG:
    """Seeded RNG whose draws are made on the host then moved to the backend,
    so a seed gives identical numbers on every backend."""

    def __init__(self, backend, seed):
        self.backend = backend
        self._gen = numpy.random.default_rng(seed)

    def uniform(self, shape, low=0.0, high=1.0, dtype="float32"):
        return self.backend.asarray(self._gen.uniform(low, high, shape), dtype=dtype)

    def normal(self, shape, mean=0.0, std=1.0, dtype="float32"):
        return self.backend.asarray(self._gen.normal(mean, std, shape), dtype=dtype)

    def permutation(self, n):
        return self.backend.asarray(self._gen.permutation(n))

    def get_state(self):
        return self._gen.bit_generator.state

    def set_state(self, state):
        self._gen.bit_generator.state = state
