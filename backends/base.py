"""The backend interface.

``Backend`` is complete: every method is written against ``self.xp`` (NumPy or a
NumPy-compatible module such as CuPy), and its math is ``kernels.reference``, so the
class is both the interface and the reference implementation. Subclasses override only
what they can do faster (thinc's ``Ops`` is the model).

Conventions
-----------
* Arrays are 2-D ``(batch, features)`` unless a docstring says otherwise.
* ``out=`` names a preallocated result buffer. When given it is filled and returned;
  it may alias an input where the docstring says so.
* Losses return ``(loss, grad)``: ``loss`` is a 0-d array on the backend's device
  (reading it to the host is the caller's choice, so no step forces a sync) and
  ``grad`` is d(mean loss)/d(input) with the input's shape.
* Optimizer updates work in place on flat 1-D buffers and may overwrite ``grads``.
  ``step`` is a 1-element int64 device array holding the 1-based number of this
  update (advanced by ``increment_step`` before it), and ``lr`` a 1-element device
  array holding the learning rate, so a step needs no host sync and a captured step
  sees a new rate.
* ``skip`` is an int32 (1,) device flag from ``guard_finite``: when set, updates and
  ``increment_step`` change nothing.
* Activations are named as ``ACTIVATIONS`` ("gelu" is the exact form, "gelu_tanh" its
  tanh approximation); ``negative_slope`` is leaky_relu's slope (>= 0), which the other
  activations ignore.
* Metric updates take ``weights``: per-row weights (rows,) that weight each row's
  contribution (Keras' weighted_metrics), or None.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import time

import numpy

from ..kernels import reference
from ..kernels.reference import ACTIVATIONS, ACTIVATIONS_NEEDING_INPUT, LEAKY_RELU_SLOPE
from . import host_graph

__all__ = ["ACTIVATIONS", "ACTIVATIONS_NEEDING_INPUT", "Backend", "LEAKY_RELU_SLOPE",
           "Segments", "UpdateOptions", "check_activation", "check_segment_bounds"]


def check_activation(name):
    """Return the canonical activation name or raise a ValueError listing the valid ones."""
    canonical = "linear" if name is None else name
    if canonical not in ACTIVATIONS:
        raise ValueError(
            f"activation: expected one of {', '.join(ACTIVATIONS)} (or None); got {name!r}"
        )
    return canonical


def check_segment_bounds(bounds):
    """``bounds`` as int64 host values, checked: increasing from 0, each but the last (the
    buffer's size) a multiple of ``reference.SEGMENT_GROUP``, as the kernels' per-group
    tables need."""
    bounds = numpy.asarray(bounds, dtype=numpy.int64).reshape(-1)
    group = reference.SEGMENT_GROUP
    if bounds.size < 2 or bounds[0] != 0 or (numpy.diff(bounds) <= 0).any() or \
            (bounds[1:-1] % group).any():
        raise ValueError(f"segments: expected increasing bounds from 0, each but the last a "
                         f"multiple of {group}; got {bounds.tolist()}")
    return bounds


@dataclasses.dataclass
class Segments:
    """A flat buffer cut into segments, one per weight: ``bounds`` (host int64, one more
    than the segments), ``groups`` the device table of the segment of each
    ``reference.SEGMENT_GROUP`` elements (None for one segment), and ``reduction``,
    whatever a backend's per-segment reduction keeps on the device (built once)."""

    bounds: numpy.ndarray
    groups: object
    reduction: object = None

    @property
    def count(self):
        return len(self.bounds) - 1


@dataclasses.dataclass
class UpdateOptions:
    """What Keras 3's ``BaseOptimizer.apply`` adds around an optimizer's rule, for the
    backends' ``*_update`` methods (``reference.apply`` is the definition). Its device
    buffers are made once, when an optimizer is built, so an update allocates nothing.

    ``step``: the int64 (1,) device count of this call (1-based, every accumulation step
    counted); ``accumulator`` (shaped like the parameters) with ``accumulation_steps``
    k > 1; ``clipvalue``; ``clip_scales``, one factor per segment that ``clip_scales``
    writes before the update; ``segments``, which the per-segment values refer to;
    ``weight_decay``, per segment, replacing the method's uniform one (weights left out
    of decay have 0); ``ema`` (shaped like the parameters) with its momentum and
    overwrite frequency (0: never)."""

    step: object
    accumulator: object = None
    accumulation_steps: int = 1
    clipvalue: float | None = None
    clip_scales: object = None
    segments: Segments | None = None
    weight_decay: object = None
    ema: object = None
    ema_momentum: float = 0.99
    ema_overwrite_frequency: int = 0

    def per_element(self, values, lo=0, hi=None, xp=numpy):
        """Per-segment ``values`` (None passes) spread over the elements [lo, hi)."""
        if values is None:
            return None
        if self.segments is None or self.segments.count == 1:
            return values[0]
        if hi is None:
            return reference.segment_values(values, self.segments.bounds, xp)
        return values[self.segments.groups[xp.arange(lo, hi) // reference.SEGMENT_GROUP]]


class Backend:
    """Array operations for training MLPs on one device."""

    name = "base"
    xp = numpy
    # Whether reading a value to the host is free (no device sync): NumPy yes, GPUs no.
    cheap_host_reads = True
    # Whether capture() records a device graph (CUDA graphs) rather than re-running.
    supports_graphs = False
    # The smallest flat buffer whose optimizer update takes a compiled (fused) path:
    # warm-ups run one update of this size to compile it outside any timing.
    fused_update_min_size = 1

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

    def gather_rows(self, x, order, cursor, out):
        """``out = x[order[cursor[0] : cursor[0] + len(out)]]``: a batch gathered at a
        position held in device memory (int64 (1,) ``cursor``), so that a captured step
        needs nothing from the host."""
        start = int(self.to_numpy(cursor)[0])
        return self.xp.take(x, order[start:start + out.shape[0]], axis=0, out=out)

    def advance(self, counter, amount):
        """``counter[0] += amount`` on the device (int64 (1,))."""
        counter += amount
        return counter

    def is_native(self, x):
        """Whether ``x`` is an array this backend computes on directly."""
        return isinstance(x, self.xp.ndarray)

    def from_dlpack(self, x, name):
        """An array of another library that exports DLPack (a torch.Tensor, a JAX
        array), as this backend's array without a copy where it lives on this device;
        host (CPU) data comes back as a NumPy array. Anything else is a TypeError
        naming both devices."""
        kind, index = x.__dlpack_device__()
        if int(kind) != DLPACK_CPU:
            raise TypeError(f"{name}: expected host data for backend {self.name!r} "
                            f"({self.device}); got a {type_name(x)} on "
                            f"{dlpack_device_name(kind, index)}. Move it to the host "
                            f"first, or build the model on the cupy backend")
        return numpy.from_dlpack(x)

    def free_memory(self):
        """Bytes the device can still allocate, or None where data lives in host
        memory."""
        return None

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

    def device_scope(self):
        """A context in which this backend's device is current, for work on its arrays
        outside its methods (which make it current themselves): a collective's copies
        and launches, array methods called directly. Nothing to do on the CPU."""
        return contextlib.nullcontext()

    # ---------------------------------------------------------------- host staging
    # Batches streamed from host memory (dnn.training.staging): loader threads write
    # them into host staging buffers, which are copied to device buffers on a stream
    # beside the compute, ordered with events. Here the device is the host: a copy is
    # done when it returns, and there are no streams or events (None).
    def host_empty(self, shape, dtype="float32"):
        """A host array to stage batches in (page-locked on a GPU, so that copies from it
        to the device run asynchronously)."""
        return numpy.empty(shape, dtype=dtype)

    def upload_stream(self):
        """A stream for host-to-device copies beside the compute stream (None here)."""
        return None

    def upload(self, host, out, stream=None):
        """``out[...] = host``: a host array into a device array of the same shape and
        dtype, queued on ``stream`` (on a GPU asynchronous when ``host`` is page-locked;
        ``host`` must then stay untouched until the copy is done, see ``host_wait``)."""
        self.xp.copyto(out, self.xp.asarray(host))
        return out

    def record_event(self, stream=None, event=None):
        """An event that happens once the work queued so far on ``stream`` (None: the
        calling thread's compute stream) is done; ``event``, when given, is recorded
        again and returned (no allocation per step). None here."""
        return None

    def wait_event(self, event, stream=None):
        """Make ``stream`` (None: the calling thread's compute stream) wait for
        ``event`` before its later work, without blocking the host. None: no wait."""

    def host_wait(self, event):
        """Block the calling thread until ``event`` has happened (None: at once)."""

    def multiply(self, a, b, out=None):
        return self.xp.multiply(a, b, out=out)

    def add(self, a, b, out=None):
        """``a + b`` elementwise (a residual block's two paths); ``out`` may alias either."""
        return self.xp.add(a, b, out=out)

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
    def activation(self, name, x, out=None, negative_slope=LEAKY_RELU_SLOPE):
        """Apply activation ``name`` (see ``ACTIVATIONS``); softmax over the last axis."""
        name = check_activation(name)
        if name == "linear" and (out is None or out is x):
            return x
        y = reference.activation(name, x, self.xp, negative_slope)
        return self._assign(out, self._same_dtype(y, x))

    def activation_backward(self, name, dy, x, y, out=None, negative_slope=LEAKY_RELU_SLOPE):
        """Backward of activation ``name`` given input ``x`` and output ``y``.

        ``x`` is only read for activations in ``ACTIVATIONS_NEEDING_INPUT`` (it may be
        None otherwise). ``out`` may alias ``dy``.
        """
        name = check_activation(name)
        if name == "linear" and (out is None or out is dy):
            return dy
        grad = reference.activation_backward(name, dy, x, y, self.xp, negative_slope)
        return self._assign(out, self._same_dtype(grad, dy))

    def bias_activation(self, x, bias, activation, out=None, negative_slope=LEAKY_RELU_SLOPE):
        """Fused ``activation(x + bias)``; ``bias`` has shape ``(features,)``.

        ``out`` may alias ``x``.
        """
        z = self.xp.add(x, bias, out=out)
        return self.activation(activation, z, out=z, negative_slope=negative_slope)

    # ---------------------------------------------------------------- normalization
    # Statistics (var, rstd, the sums) are in the weight dtype; ``scratch`` is a buffer
    # shaped like x in that dtype, which an implementation may overwrite (the CuPy one
    # needs it for squared deviations and products; it allocates nothing in a step).
    # ``gamma`` and ``beta`` may be None (Keras' scale=False, center=False: 1 and 0), and
    # then so are their gradients ``dgamma`` and ``dbeta``.
    def batch_norm_forward(self, x, gamma, beta, epsilon, out, xhat, var, moving_mean,
                           moving_var, momentum, scratch):
        """Training-mode batch normalization: ``out`` from the batch's statistics;
        ``xhat`` (the normalized x) and ``var`` (the batch variance, (cols,)) are kept
        for the backward pass; the moving statistics move towards the batch's by
        ``momentum`` (Keras: ``moving = moving * momentum + batch * (1 - momentum)``)."""
        y, xh, mean, batch_var = reference.batch_norm(x, gamma, beta, epsilon, self.xp)
        self._write(out, y)
        self._write(xhat, xh)
        self._write(var, batch_var)
        self._write(moving_mean, reference.moving_average(moving_mean, mean, momentum))
        self._write(moving_var, reference.moving_average(moving_var, batch_var, momentum))
        return out

    def batch_norm_inference(self, x, gamma, beta, moving_mean, moving_var, epsilon, out,
                             xhat=None):
        """Inference-mode batch normalization with the moving statistics (``xhat``, the
        normalized x, kept when given)."""
        self._write(out, reference.batch_norm_inference(x, gamma, beta, moving_mean,
                                                        moving_var, epsilon, self.xp))
        if xhat is not None:
            self._write(xhat, reference.standardize(x, moving_mean, moving_var + epsilon,
                                                    self.xp))
        return out

    def batch_norm_backward(self, dy, xhat, gamma, var, epsilon, dgamma, dbeta, out, scratch,
                            batch=True):
        """``out`` = dL/dx through the batch statistics (``batch``), or of the affine map
        with the moving statistics ``var``; fills ``dgamma`` and ``dbeta``. ``out`` may
        alias ``dy``."""
        dx, dg, db = reference.batch_norm_backward(dy, xhat, gamma, var, epsilon, self.xp,
                                                   batch)
        self._write(dgamma, dg)
        self._write(dbeta, db)
        self._write(out, dx)
        return out

    def layer_norm_forward(self, x, gamma, beta, epsilon, out, xhat, rstd, shift=None):
        """Normalization of each row over its features; keeps ``xhat`` and the rows'
        ``rstd`` ((rows,)) for the backward pass. With ``shift`` (a (rows,) buffer) it is
        Keras' rms_scaling (``reference.rms_scaling``; beta unused), which keeps each
        row's mean * rstd there."""
        if shift is not None:
            y, xh, r, sh = reference.rms_scaling(x, gamma, epsilon, self.xp)
            self._write(shift, sh)
        else:
            y, xh, r = reference.layer_norm(x, gamma, beta, epsilon, self.xp)
        self._write(out, y)
        self._write(xhat, xh)
        self._write(rstd, r)
        return out

    def layer_norm_backward(self, dy, xhat, gamma, rstd, dgamma, dbeta, out, scratch,
                            shift=None):
        """``out`` = dL/dx; fills ``dgamma`` and ``dbeta``. ``out`` may alias ``dy``.
        ``shift``: as given to ``layer_norm_forward`` (rms_scaling), or None."""
        if shift is not None:
            dx, dg = reference.rms_scaling_backward(dy, xhat, gamma, rstd, shift, self.xp)
            db = None
        else:
            dx, dg, db = reference.layer_norm_backward(dy, xhat, gamma, rstd, self.xp)
        self._write(dgamma, dg)
        self._write(dbeta, db)
        self._write(out, dx)
        return out

    def standardize(self, x, mean, variance, out, invert=False):
        """Keras' Normalization: ``(x - mean) / max(sqrt(variance), 1e-7)`` per column,
        or with ``invert`` the inverse, ``mean + x * max(sqrt(variance), 1e-7)``."""
        fn = reference.unstandardize if invert else reference.standardize
        self._write(out, fn(x, mean, variance, self.xp))
        return out

    def standardize_backward(self, dy, variance, out, invert=False):
        fn = reference.unstandardize_backward if invert else reference.standardize_backward
        self._write(out, fn(dy, variance, self.xp))
        return out

    # ------------------------------------------------------------------ reductions
    def sum(self, x, axis=None, out=None, keepdims=False):
        return self.xp.sum(x, axis=axis, out=out, keepdims=keepdims)

    def value_summary(self, x):
        """0-d device arrays ``(min, max, count of values that are not whole numbers)``
        of ``x``, for checking targets; read them with ``read_scalars``."""
        xp = self.xp
        whole = x if x.dtype.kind in "biu" else xp.round(x)
        return x.min(), x.max(), xp.count_nonzero(x != whole)

    def read_scalars(self, values):
        """0-d arrays of this backend as host floats, in one transfer."""
        xp = self.xp
        return [float(v) for v in self.to_numpy(
            xp.stack([xp.asarray(v).astype(numpy.float64) for v in values]))]

    def column_sum(self, x, out=None):
        """Sum over the batch axis: the bias gradient, shape ``(features,)``; summed in
        ``out``'s dtype (float32 for bfloat16 input under mixed precision)."""
        return self.xp.sum(x, axis=0, out=out, dtype=None if out is None else out.dtype)

    # ---------------------------------------------------------------------- losses
    # ``weights``: per-row sample weights (rows,) or None. The loss is the weighted sum
    # divided by the batch size (Keras' "sum over batch size").
    def softmax_cross_entropy(self, logits, labels, grad_out=None, weights=None,
                              label_smoothing=0.0, ignore_class=None):
        """Mean cross-entropy of softmax(logits), with its gradient w.r.t. logits.

        ``labels`` are integer class ids of shape ``(n,)`` or one-hot / probability
        rows of shape ``(n, classes)``. ``ignore_class`` (integer labels): rows of that
        label are left out, and the mean is over the others (Keras' ignore_class).
        """
        loss, grad = reference.softmax_cross_entropy(logits, labels, self.xp, weights,
                                                     label_smoothing, ignore_class)
        return loss, self._assign(grad_out, self._same_dtype(grad, logits))

    def sigmoid_binary_cross_entropy(self, logits, targets, grad_out=None, weights=None,
                                     label_smoothing=0.0):
        """Mean binary cross-entropy of sigmoid(logits) against targets in [0, 1]."""
        loss, grad = reference.sigmoid_binary_cross_entropy(logits, targets, self.xp, weights,
                                                            label_smoothing)
        return loss, self._assign(grad_out, self._same_dtype(grad, logits))

    def mean_squared_error(self, pred, target, grad_out=None, weights=None):
        """Mean over all elements of (pred - target)**2."""
        loss, grad = reference.mean_squared_error(pred, target, self.xp, weights)
        return loss, self._assign(grad_out, self._same_dtype(grad, pred))

    def mean_absolute_error(self, pred, target, grad_out=None, weights=None):
        """Mean over all elements of |pred - target|."""
        loss, grad = reference.mean_absolute_error(pred, target, self.xp, weights)
        return loss, self._assign(grad_out, self._same_dtype(grad, pred))

    def huber(self, pred, target, delta=1.0, grad_out=None, weights=None):
        """Mean Huber loss (quadratic within ``delta``, linear beyond)."""
        loss, grad = reference.huber(pred, target, delta, self.xp, weights)
        return loss, self._assign(grad_out, self._same_dtype(grad, pred))

    def add_regularization(self, weights, grads, l1, l2, total):
        """``total[0] += l1 * sum(|w|) + l2 * sum(w**2)``, and when ``grads`` is given
        ``grads += l1 * sign(w) + 2 * l2 * w`` (a weight penalty and its gradient)."""
        penalty, grad = reference.regularization(weights, l1, l2, self.xp)
        total += penalty.astype(total.dtype)
        if grads is not None:
            grads += grad.astype(grads.dtype)
        return total

    # --------------------------------------------------------------------- metrics
    # ``total`` is a device buffer of the metric's running totals, so nothing is read
    # back.
    def add_argmax_matches(self, scores, labels, total, weights=None):
        """``total[0] +=`` the rows whose argmax equals ``labels`` (int ids, or the argmax
        of one-hot rows)."""
        total += reference.argmax_matches(scores, labels, self.xp, weights)
        return total

    def add_threshold_matches(self, scores, targets, threshold, total, weights=None):
        """``total[0] +=`` the elements where ``scores > threshold`` agrees with
        ``targets > 0.5``."""
        total += reference.threshold_matches(scores, targets, threshold, self.xp, weights)
        return total

    def add_abs_error(self, pred, target, total, activation="linear", weights=None):
        """``total[0] +=`` the sum of |activation(pred) - target|."""
        error = reference.abs_error(pred, target, activation, self.xp, weights)
        total += error.astype(total.dtype)
        return total

    def add_top_k_matches(self, scores, labels, k, total, weights=None):
        """``total[0] +=`` the rows whose label (int ids, or the argmax of target rows)
        is among the ``k`` highest scores."""
        total += reference.top_k_matches(scores, labels, k, self.xp, weights)
        return total

    def add_binary_counts(self, scores, targets, threshold, total, weights=None,
                          which=(0, 1, 2)):
        """``total[j] +=`` count ``which[j]`` of (true positives, predicted positives,
        actual positives) of ``scores > threshold`` against targets that are not 0."""
        counts = reference.binary_counts(scores, targets, threshold, self.xp, weights)
        for slot, count in enumerate(which):
            total[slot:slot + 1] += counts[count]
        return total

    def select_scores(self, scores, targets, top_k=None, class_id=None,
                      activation="linear", out=None):
        """``(scores, targets)`` as precision and recall with ``top_k`` or ``class_id``
        count them (``reference.select_scores``); ``out``: two buffers to fill, or
        None."""
        p, t = reference.select_scores(scores, targets, top_k, class_id, activation, self.xp)
        if out is None:
            return p.astype(scores.dtype, copy=False), t
        self._write(out[0], p)
        self._write(out[1], t)
        return out

    def add_threshold_histogram(self, scores, targets, m, total, activation="linear",
                                weights=None):
        """``total`` (2 (m + 1) slots) += how many positive, then negative, targets have
        scores (after ``activation``) above b of the m AUC thresholds, for b = 0..m (or
        the sum of their rows' weights)."""
        probabilities = reference.activation(activation, scores, self.xp)
        positive, negative = reference.threshold_histogram(probabilities, targets, m,
                                                           self.xp, weights)
        total[:m + 1] += positive.astype(total.dtype)
        total[m + 1:] += negative.astype(total.dtype)
        return total

    def add_row_weights(self, weights, rows, total):
        """``total[0] +=`` the sum of ``weights``, or ``rows`` when they are None: what a
        weighted mean divides by."""
        total += rows if weights is None else self.xp.sum(weights).astype(total.dtype)
        return total

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
    # The *_update methods are Keras 3's optimizers (``reference.RULES``), with decoupled
    # ``weight_decay`` (``p *= 1 - lr * weight_decay`` first) and, through ``options``
    # (an ``UpdateOptions``), the rest of Keras' apply: gradient accumulation, clipping,
    # per-weight weight decay and the weights' moving average, all in the update's one
    # pass. Each one's state buffers are shaped like ``params``.
    def clip_by_value(self, grads, clipvalue):
        return self.xp.clip(grads, -clipvalue, clipvalue, out=grads)

    def clip_by_global_norm(self, grads, clipnorm):
        """Scale ``grads`` in place so that its L2 norm is at most ``clipnorm``: the
        clipping of files of the legacy formula (``clip_scales`` is Keras')."""
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

    def _rate(self, lr):
        return float(self.to_numpy(lr).reshape(-1)[0])

    def weight_segments(self, bounds, dtype="float32"):
        """The flat buffer cut into segments ``[bounds[s], bounds[s + 1])``, one per
        weight (bounds: host integers, multiples of ``reference.SEGMENT_GROUP``, the
        last the buffer's size), as a ``Segments`` with its tables on this device; a
        GPU also keeps there what ``clip_scales`` sums, in ``dtype``."""
        bounds = check_segment_bounds(bounds)
        return Segments(bounds, self._segment_groups(bounds))

    def _segment_groups(self, bounds):
        """The int32 device table of each SEGMENT_GROUP elements' segment (None for one)."""
        if len(bounds) == 2:
            return None
        sizes = -(-numpy.diff(bounds) // reference.SEGMENT_GROUP)  # the last group may be short
        return self.asarray(numpy.repeat(numpy.arange(len(sizes), dtype=numpy.int32), sizes))

    def clip_scales(self, grads, clipnorm, per_weight, options):
        """``options.clip_scales`` (one per segment of ``options.segments``) = Keras'
        clip factor of each segment of the gradient the next update uses (see
        ``reference.clip_scales``): per weight, or with ``per_weight=False`` of the
        joint norm. The update scales the gradient in its own pass."""
        step = int(self.to_numpy(options.step)[0])
        g = reference.accumulated_gradient(grads, options.accumulator,
                                           options.accumulation_steps, step)
        scales = reference.clip_scales(g, options.segments.bounds, clipnorm, per_weight,
                                       self.xp)
        self._write(options.clip_scales, scales)
        return options.clip_scales

    def sgd_update(self, params, grads, momentums, lr, momentum=0.0, nesterov=False,
                   weight_decay=0.0, skip=None, options=None):
        """Keras 3's SGD: ``b = m b - lr g; p += b`` (Nesterov: ``p += m b - lr g``);
        ``momentums`` may be None when ``momentum == 0``."""
        return self._update("sgd", params, grads, {"momentum": momentums}, None, lr,
                            weight_decay, skip, options, momentum=momentum, nesterov=nesterov)

    def rmsprop_update(self, params, grads, sq_avg, lr, rho=0.9, epsilon=1e-7,
                       momentum=0.0, velocity=None, weight_decay=0.0, skip=None,
                       average_gradient=None, options=None):
        """Keras 3's RMSprop (epsilon inside the root; centered when
        ``average_gradient`` is given); ``velocity`` only with momentum."""
        state = {"sq_avg": sq_avg, "velocity": velocity}
        if average_gradient is not None:
            state["average_gradient"] = average_gradient
        return self._update("rmsprop", params, grads, state, None, lr, weight_decay, skip,
                            options, rho=rho, epsilon=epsilon, momentum=momentum)

    def adam_update(self, params, grads, m, v, step, lr, beta_1=0.9, beta_2=0.999,
                    epsilon=1e-7, weight_decay=0.0, decoupled_weight_decay=True, skip=None,
                    v_hat=None, options=None):
        """Adam (AdamW: the same with weight decay) at the 1-based step held in ``step``
        (see ``reference.adam``); AMSGrad with ``v_hat``. ``decoupled_weight_decay=False``
        adds L2 to the gradient, the legacy formula, which takes no ``v_hat`` or
        ``options``."""
        if not decoupled_weight_decay and (v_hat is not None or options is not None):
            raise ValueError("adam_update: decoupled_weight_decay=False (the legacy formula) "
                             "takes no v_hat or options")
        if v_hat is not None or options is not None:
            state = {"m": m, "v": v, **({} if v_hat is None else {"v_hat": v_hat})}
            return self._update("adam", params, grads, state, step, lr, weight_decay, skip,
                                options, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
        if self._skipped(skip):
            return params
        t = int(self.to_numpy(step)[0])
        new = reference.adam(params, grads, m, v, t, self._rate(lr), beta_1, beta_2, epsilon,
                             weight_decay, decoupled_weight_decay, self.xp)
        for target, value in zip((params, m, v), new):
            self._write(target, value)
        return params

    def nadam_update(self, params, grads, m, v, u_product, step, lr, beta_1=0.9,
                     beta_2=0.999, epsilon=1e-7, weight_decay=0.0, skip=None, options=None):
        """Keras 3's Nadam; ``u_product`` is float64 (2,) (see ``reference.nadam_step``),
        [1, 1] before the first update."""
        return self._update("nadam", params, grads, {"m": m, "v": v, "u_product": u_product},
                            step, lr, weight_decay, skip, options, beta_1=beta_1,
                            beta_2=beta_2, epsilon=epsilon)

    def adagrad_update(self, params, grads, accumulator, lr, epsilon=1e-7, weight_decay=0.0,
                       skip=None, options=None):
        """Keras 3's Adagrad (``accumulator`` starts at its initial value)."""
        return self._update("adagrad", params, grads, {"accumulator": accumulator}, None, lr,
                            weight_decay, skip, options, epsilon=epsilon)

    def adamax_update(self, params, grads, m, u, step, lr, beta_1=0.9, beta_2=0.999,
                      epsilon=1e-7, weight_decay=0.0, skip=None, options=None):
        """Keras 3's Adamax at the 1-based step held in ``step``."""
        return self._update("adamax", params, grads, {"m": m, "u": u}, step, lr, weight_decay,
                            skip, options, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)

    def lion_update(self, params, grads, momentums, lr, beta_1=0.9, beta_2=0.99,
                    weight_decay=0.0, skip=None, options=None):
        """Keras 3's Lion."""
        return self._update("lion", params, grads, {"momentum": momentums}, None, lr,
                            weight_decay, skip, options, beta_1=beta_1, beta_2=beta_2)

    def _update(self, rule, params, grads, state, step, lr, weight_decay, skip, options,
                **hyperparameters):
        """Any rule through ``reference.apply``, written back in place."""
        if self._skipped(skip):
            return params
        p, new, accumulator, ema = reference.apply(
            rule, params, grads, dict(state), self._step_number(step, options),
            self._rate(lr), self.xp, **self._apply_arguments(options, weight_decay),
            **hyperparameters)
        self._write(params, p)
        for name, buffer in state.items():
            if buffer is not None and new.get(name) is not None:
                self._write(buffer, new[name])
        if options is not None:
            for buffer, value in ((options.accumulator, accumulator), (options.ema, ema)):
                if buffer is not None:
                    self._write(buffer, value)
        return params

    def _step_number(self, step, options):
        """The 1-based number of this call: from ``step``, else ``options.step``, else 1
        (the rules without a step count need it only for Keras' apply)."""
        step = step if step is not None else (None if options is None else options.step)
        return 1 if step is None else int(self.to_numpy(step)[0])

    def _apply_arguments(self, options, weight_decay, lo=0, hi=None):
        """``reference.apply``'s keyword arguments from ``options``, with per-segment
        values spread over the elements ``[lo, hi)``."""
        if options is None:
            return {"weight_decay": weight_decay}
        spread = functools.partial(options.per_element, lo=lo, hi=hi, xp=self.xp)
        cut = (lambda a: a) if hi is None else (lambda a: None if a is None else a[lo:hi])
        return {"accumulator": cut(options.accumulator),
                "accumulation_steps": options.accumulation_steps,
                "clipvalue": options.clipvalue,
                "clip_scale": spread(options.clip_scales),
                "weight_decay": weight_decay if options.weight_decay is None
                else spread(options.weight_decay),
                "ema": cut(options.ema), "ema_momentum": options.ema_momentum,
                "ema_overwrite_frequency": options.ema_overwrite_frequency}

    # The formulas of files written before Keras 3 parity (an optimizer config's formula
    # "legacy"), kept only so that such files resume as they trained.
    def sgd_legacy_update(self, params, grads, velocity, lr, momentum=0.0, nesterov=False,
                          weight_decay=0.0, skip=None):
        """PyTorch's SGD with L2 decay (``reference.sgd_legacy``): old files only."""
        if self._skipped(skip):
            return params
        p, vel = reference.sgd_legacy(params, grads, velocity, self._rate(lr), momentum,
                                      nesterov, weight_decay)
        self._write(params, p)
        if momentum:
            self._write(velocity, vel)
        return params

    def rmsprop_legacy_update(self, params, grads, sq_avg, lr, rho=0.9, epsilon=1e-7,
                              momentum=0.0, velocity=None, weight_decay=0.0, skip=None):
        """RMSprop with epsilon outside the root (``reference.rmsprop_legacy``): old
        files only."""
        if self._skipped(skip):
            return params
        p, sq, vel = reference.rmsprop_legacy(params, grads, sq_avg, velocity, self._rate(lr),
                                              rho, epsilon, momentum, weight_decay, self.xp)
        self._write(params, p)
        self._write(sq_avg, sq)
        if momentum:
            self._write(velocity, vel)
        return params

    def scheduled_rate(self, schedule, step, lr):
        """``lr[0]`` = the learning rate of an encoded schedule (a float64 device array,
        see ``reference.scheduled_rate``) for the update numbered ``step[0]``."""
        steps_taken = int(self.to_numpy(step)[0]) - 1
        lr[...] = reference.scheduled_rate(self.to_numpy(schedule), steps_taken)
        return lr

    # ------------------------------------------------------------------------ rng
    def dropout_mask(self, shape, rate, seed, counter, dtype="float32", out=None, offset=0):
        """Inverted-dropout mask: 0 with probability ``rate``, else ``1/(1-rate)``.

        A pure function of ``(seed, counter, offset)`` (a splitmix64 hash of each
        element's index plus ``offset``, the same on every backend), so a resumed run
        draws the same masks, and a rank holding rows r.. of a global batch draws those
        rows of its mask. ``counter`` is an int or a 1-element int64 device array (the
        optimizer's step count).
        """
        count = int(self.to_numpy(counter).reshape(-1)[0]) if hasattr(counter, "shape") \
            else int(counter)
        n = int(numpy.prod(shape))
        mask = reference.dropout_mask(n, rate, seed, count, dtype, offset).reshape(shape)
        return self._assign(out, self.xp.asarray(mask))

    # -------------------------------------------------------------------- helpers
    def _assign(self, out, value):
        if out is None:
            return value
        self.xp.copyto(out, value)
        return out

    def _write(self, target, value):
        """Copy an updated state buffer back in place, in the buffer's own dtype (no
        buffer, None: nothing to keep)."""
        if target is not None:
            self.xp.copyto(target, value, casting="same_kind")

    @staticmethod
    def _same_dtype(value, like):
        return value.astype(like.dtype, copy=False)

    def capture(self, fn):
        """Record ``fn`` for replay as a CUDA graph would hold it: ``capture(fn)
        .replay()`` runs the same operations on the same buffers with the same values
        (not ``fn`` again), and ``fn`` must not allocate, read the device or
        synchronise (see ``backends.host_graph``). So code written for captured steps
        runs, and is checked, on every backend; a GPU backend records a CUDA graph."""
        return host_graph.capture(self, fn)

    def host_callback(self, fn, *args):
        """Call ``fn(*args)`` on the host at this point of the step's work. A captured
        step holds it as a host node: each replay calls it again, in order (MPI's
        collectives on host arrays are such calls)."""
        return fn(*args)

    def limit_threads(self, threads):
        """Use at most ``threads`` host threads from now on (processes that share a
        machine's cores). Returns the pools that were limited: none here, where the work
        runs on a device."""
        return []

    def time_device(self, fn, repeats):
        """Seconds per call of ``fn()`` on the device's clock, over ``repeats`` calls in a
        row (the host clock here, with nothing queued; CUDA events on a GPU)."""
        self.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        self.synchronize()
        return (time.perf_counter() - start) / repeats

    def warmup(self):
        """Compile or load the device code (kernels, library handles) before timing.
        Nothing on the CPU."""

    def describe(self):
        """A dict describing the device, for summaries and benchmark records."""
        return {"backend": self.name, "device": self.device}


DLPACK_CPU, DLPACK_CUDA = 1, 2  # DLPack's kDLCPU and kDLCUDA device types
_DLPACK_DEVICES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal",
                   10: "rocm", 13: "cuda_managed", 14: "oneapi"}


def dlpack_device_name(kind, index):
    return f"{_DLPACK_DEVICES.get(int(kind), f'DLPack device type {int(kind)}')}:{int(index)}"


def type_name(x):
    return f"{type(x).__module__.split('.')[0]}.{type(x).__name__}"
