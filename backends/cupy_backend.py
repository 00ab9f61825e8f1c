"""CuPy backend: the NVIDIA GPU path.

Importable with neither CuPy nor a GPU: whether it can run is decided lazily by
``cupy_unavailable_reason()``. The hot elementwise and row-wise work runs in the fused
kernels of ``kernels/dnn_kernels.cu``; GEMMs go straight to cuBLAS.
"""
from __future__ import annotations

import functools
import inspect
import os
import re

import numpy

from ..kernels.catalogue import FLOAT_DTYPES, REDUCE_BLOCKS
from ..kernels.cuda import CudaRuntime
from ..kernels.launch import FusedKernels, KernelUnavailable
from ..kernels.launch import Apply, chunk_table
from ..kernels.reference import NORMALIZATION_EPSILON
from .base import (ACTIVATIONS_NEEDING_INPUT, DLPACK_CPU, DLPACK_CUDA, LEAKY_RELU_SLOPE,
                   Backend, dlpack_device_name, type_name, check_activation)
from .cublas_ctypes import CublasHandle

INSTALL_HINT = ("pip install cupy-cuda13x (CUDA 13) or cupy-cuda12x (CUDA 12); in the dnn "
                "checkout, pip install '.[cuda13]' or pip install '.[cuda12]'")


@functools.lru_cache(maxsize=None)
def _import_cupy():
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return None, f"CuPy is not installed or failed to import ({exc}); {INSTALL_HINT}"
    return cupy, None


@functools.lru_cache(maxsize=None)
def cupy_unavailable_reason():
    """None when CuPy imports and sees a CUDA device, else a sentence saying why not."""
    cupy, why = _import_cupy()
    if cupy is None:
        return why
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"CuPy is installed but no CUDA device is visible ({exc})"
    if count == 0:
        return "CuPy is installed but no CUDA device is visible (device count 0)"
    return None


# bfloat16 arrays are ml_dtypes' bfloat16, which CuPy supports from 14 on, with NumPy
# 2.1.2 or later (CuPy's upgrade guide); CuPy 13 has no such dtype and fails at the first
# allocation.
BFLOAT16_CUPY, BFLOAT16_NUMPY = (14,), (2, 1, 2)


def _version(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _on_device(method):
    @functools.wraps(method)
    def on_device(self, *args, **kwargs):
        with self._device:
            return method(self, *args, **kwargs)

    on_device.runs_on_device = True
    return on_device


def _every_method_on_its_device(cls):
    """Run every public method with the backend's device current: CuPy allocates, and
    launches its own kernels, ours, cuBLAS's and the captured graphs, on the current
    device's current stream, so with another device current (``cupy:1`` while device 0
    is) kernels loaded for device 0 would read device 1's memory. Nested calls re-enter
    the same device (CuPy's Device keeps a per-thread stack)."""
    for name in dir(cls):
        method = inspect.getattr_static(cls, name)
        if not name.startswith("_") and inspect.isfunction(method):
            setattr(cls, name, _on_device(method))
    return cls


@_every_method_on_its_device
class CupyBackend(Backend):
    """``CupyBackend(device=0, tf32=None)``. TF32 GEMMs are off unless ``tf32=True``
    or the environment sets ``DNN_TF32=1``. Every method runs with ``device`` current."""

    name = "cupy"
    cheap_host_reads = False
    supports_graphs = True

    def __init__(self, device=0, tf32=None):
        super().__init__()
        why = cupy_unavailable_reason()
        if why is not None:
            raise RuntimeError(f"backend 'cupy': {why}")
        cupy, _ = _import_cupy()
        count = cupy.cuda.runtime.getDeviceCount()
        if not 0 <= int(device) < count:
            raise ValueError(f"backend 'cupy': expected a device index in [0, {count}); "
                             f"got {device!r}")
        self.xp = cupy
        self.device_id = int(device)
        self.device = f"cuda:{self.device_id}"
        self._device = cupy.cuda.Device(self.device_id)
        self.tf32 = os.environ.get("DNN_TF32", "0") == "1" if tf32 is None else bool(tf32)
        self.kernels = FusedKernels(CudaRuntime(cupy))
        self._handle = None
        # Buffers the backend owns (ones vectors, zero biases, loss scratch), allocated
        # once per shape and kept alive, so a captured CUDA graph may point at them.
        self._persistent = {}
        self._float_types = (numpy.dtype("float32"), numpy.dtype("float64"))
        self._capturing = False

    def __repr__(self):
        return f"CupyBackend(device={self.device_id}, tf32={self.tf32})"

    # ------------------------------------------------------------------ allocation
    def _out_of_memory(self, exc, shape, dtype):
        nbytes = int(numpy.prod(shape)) * numpy.dtype(dtype).itemsize
        return MemoryError(
            f"backend 'cupy' ({self.device}): out of GPU memory allocating "
            f"{nbytes / 2**20:,.1f} MiB for an array of shape {tuple(shape)} {numpy.dtype(dtype)}; "
            f"try a smaller batch_size (or a smaller model)")

    def _check_dtype(self, dtype):
        """bfloat16 needs a CuPy (and a NumPy) that have it: refuse it clearly on older
        ones."""
        if dtype is None or numpy.dtype(dtype).name != "bfloat16":
            return
        for library, version, needed, hint in (
                ("CuPy", self.xp.__version__, BFLOAT16_CUPY,
                 "pip install 'cupy-cuda12x>=14' (or '.[cuda12]' in the dnn checkout)"),
                ("NumPy", numpy.__version__, BFLOAT16_NUMPY, "pip install 'numpy>=2.1.2'")):
            if _version(version) < needed:
                raise TypeError(
                    f"backend 'cupy': bfloat16 (mixed_bfloat16) needs {library} >= "
                    f"{'.'.join(map(str, needed))} (bfloat16 is ml_dtypes' there); got "
                    f"{library} {version}: {hint}, or use dtype float32")

    def _allocate(self, make, shape, dtype):
        self._check_dtype(dtype)
        try:
            return make(shape, dtype=dtype)
        except self.xp.cuda.memory.OutOfMemoryError as exc:
            raise self._out_of_memory(exc, shape, dtype) from exc

    def empty(self, shape, dtype="float32"):
        return self._allocate(self.xp.empty, shape, dtype)

    def zeros(self, shape, dtype="float32"):
        return self._allocate(self.xp.zeros, shape, dtype)

    def asarray(self, x, dtype=None):
        """Host data is copied to this device; a CuPy array on another device is an
        error rather than a silent transfer."""
        cupy = self.xp
        if isinstance(x, cupy.ndarray) and x.device.id != self.device_id:
            raise ValueError(f"array: expected data on {self.device} (this backend's "
                             f"device); got a cupy.ndarray on cuda:{x.device.id}")
        self._check_dtype(dtype if dtype is not None else getattr(x, "dtype", None))
        try:
            return cupy.ascontiguousarray(cupy.asarray(x, dtype=dtype))
        except cupy.cuda.memory.OutOfMemoryError as exc:
            shape = getattr(x, "shape", numpy.shape(x))
            raise self._out_of_memory(exc, shape, dtype or getattr(x, "dtype", "float32")) \
                from exc

    def from_dlpack(self, x, name):
        kind, index = x.__dlpack_device__()
        if int(kind) == DLPACK_CUDA and int(index) == self.device_id:
            return self.xp.from_dlpack(x)
        if int(kind) == DLPACK_CPU:
            return numpy.from_dlpack(x)  # host data: uploaded with the rest
        raise TypeError(f"{name}: expected data on {self.device} or on the host; got a "
                        f"{type_name(x)} on {dlpack_device_name(kind, index)}")

    def free_memory(self):
        free, _ = self.xp.cuda.runtime.memGetInfo()
        return int(free) + int(self.xp.get_default_memory_pool().free_bytes())

    def check_array(self, x, name):
        if isinstance(x, self.xp.ndarray) and x.device.id != self.device_id:
            raise TypeError(f"{name}: expected data on {self.device}; got a cupy.ndarray on "
                            f"cuda:{x.device.id}")

    def to_numpy(self, x):
        return self.xp.asnumpy(x) if isinstance(x, self.xp.ndarray) else numpy.asarray(x)

    def synchronize(self):
        self._device.synchronize()

    def device_scope(self):
        return self._device

    # --------------------------------------------------------------------- GEMM
    def gemm(self, a, b, out=None, trans_a=False, trans_b=False):
        """``op(a) @ op(b)`` straight to cuBLAS s/dgemm through ctypes (no dispatch
        layer, and callable during CUDA-graph capture); see ``cublas_ctypes``."""
        dtype = a.dtype
        bf16 = dtype.name == "bfloat16"
        if (dtype not in self._float_types and not bf16) or b.dtype != dtype or not (
                a.flags.c_contiguous and b.flags.c_contiguous):
            self._generic("gemm", a, b)
            return super().gemm(a, b, out=out, trans_a=trans_a, trans_b=trans_b)
        m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
        kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
        if k != kb:
            raise ValueError(f"gemm: inner dimensions differ: op(a) is {m}x{k}, op(b) is "
                             f"{kb}x{n}")
        if out is None:
            out = self.empty((m, n), dtype)
        elif tuple(out.shape) != (m, n) or not out.flags.c_contiguous or not (
                out.dtype == dtype or (bf16 and out.dtype == numpy.float32)):
            raise ValueError(f"gemm: out: expected a C-contiguous {m}x{n} {dtype} array"
                             f"{' (or float32)' if bf16 else ''}; got {tuple(out.shape)} "
                             f"{out.dtype}")
        return self._blas().gemm_row_major(a, b, out, trans_a, trans_b, tf32=self.tf32)

    def _blas(self):
        if self._handle is None:
            self._handle = CublasHandle(self.xp)  # on the current device: ours
        return self._handle

    def _buffer(self, tag, shape, dtype, fill=None):
        """A persistent buffer for (tag, shape, dtype), created on first request."""
        key = (tag, tuple(shape), numpy.dtype(dtype))
        buf = self._persistent.get(key)
        if buf is None:
            buf = self._persistent[key] = self.empty(shape, dtype)
            if fill is not None:
                buf.fill(fill)
        return buf

    def _ones_row(self, n, dtype):
        return self._buffer("ones", (1, n), dtype, fill=1)

    def column_sum(self, x, out=None):
        """Bias gradient as a ones-vector GEMV through cuBLAS: CuPy's CUB path does not
        cover axis-0 sums of C-contiguous arrays."""
        if x.ndim != 2 or (x.dtype not in self._float_types and x.dtype.name != "bfloat16"):
            self._generic("column_sum", x)
            return super().column_sum(x, out=out)
        if out is None:
            out = self.empty((x.shape[1],), x.dtype)
        self.gemm(self._ones_row(x.shape[0], x.dtype), x, out=out.reshape(1, -1))
        return out

    # --------------------------------------------------------------- activations
    def _fusable(self, *arrays):
        """Whether the arrays can go to a fused kernel: C-contiguous, of a storage type
        kernels are built for (each kernel lists its own; an unbuilt one raises
        KernelUnavailable and the caller falls back)."""
        return all(a.flags.c_contiguous and a.dtype.name in FLOAT_DTYPES
                   for a in arrays if a is not None)

    def _generic(self, op, *arrays):
        """Guard for falling back to CuPy's own operations, which may allocate: inside
        a graph capture that is an error, never a silent hazard."""
        if self._capturing:
            kinds = ", ".join(f"{a.dtype} {tuple(a.shape)}" for a in arrays if a is not None)
            raise RuntimeError(f"{op}: no capture-safe kernel for {kinds}; train with "
                               f"fit(cuda_graph=False)")

    def _fused_or_generic(self, op, fusable, fused, *args, **kwargs):
        """The one dispatch of an operation that has fused kernels: ``fused()`` when
        ``fusable`` (the caller's test of shapes and dtypes, with ``_fusable``); when not,
        or when a kernel is not built for the dtype (KernelUnavailable), ``Backend.<op>``
        on ``args`` and ``kwargs``: the generic version in CuPy's own operations, which a
        graph capture refuses (``_generic``)."""
        if fusable:
            try:
                return fused()
            except KernelUnavailable:
                pass
        self._generic(op, *(a for a in (*args, *kwargs.values())
                            if isinstance(a, self.xp.ndarray)))
        return getattr(Backend, op)(self, *args, **kwargs)

    def _zero_bias(self, cols, dtype):
        return self._buffer("zeros", (cols,), dtype, fill=0)

    def _out(self, out, like):
        return self.empty(like.shape, like.dtype) if out is None else out

    def bias_activation(self, x, bias, activation, out=None, negative_slope=LEAKY_RELU_SLOPE):
        activation = check_activation(activation)
        return self._fused_or_generic(
            "bias_activation", x.ndim == 2 and bias.dtype == x.dtype and self._fusable(
                x, bias, out),
            lambda: self.kernels.bias_activation(x, bias, activation, self._out(out, x),
                                                 negative_slope),
            x, bias, activation, out=out, negative_slope=negative_slope)

    def activation(self, name, x, out=None, negative_slope=LEAKY_RELU_SLOPE):
        name = check_activation(name)
        return self._fused_or_generic(
            "activation", x.ndim == 2 and self._fusable(x, out),
            lambda: self.bias_activation(x, self._zero_bias(x.shape[1], x.dtype), name, out,
                                         negative_slope),
            name, x, out=out, negative_slope=negative_slope)

    def activation_backward(self, name, dy, x, y, out=None, negative_slope=LEAKY_RELU_SLOPE):
        name = check_activation(name)
        if name == "linear" and (out is None or out is dy):
            return dy
        saved = x if name in ACTIVATIONS_NEEDING_INPUT else y
        return self._fused_or_generic(
            "activation_backward",
            dy.ndim == 2 and saved is not None and self._fusable(dy, saved, out),
            lambda: self.kernels.activation_backward(name, dy, x, y, self._out(out, dy),
                                                     negative_slope),
            name, dy, x, y, out=out, negative_slope=negative_slope)

    # ------------------------------------------------------------ normalization
    # Column statistics are column sums (cuBLAS GEMVs with a ones vector, which scale and
    # can be captured) around small fused kernels.
    def _stats(self, tag, cols, dtype):
        return self._buffer(tag, (cols,), dtype)

    def batch_norm_forward(self, x, gamma, beta, epsilon, out, xhat, var, moving_mean,
                           moving_var, momentum, scratch):
        def fused():
            cols, stats = x.shape[1], var.dtype
            sum1, sum2 = self._stats("bn_sum1", cols, stats), self._stats("bn_sum2", cols, stats)
            mean = self._stats("bn_mean", cols, stats)
            self.column_sum(x, out=sum1)
            self.kernels.center_square(x, sum1, scratch)
            self.column_sum(scratch, out=sum2)
            self.kernels.batch_stats(x.dtype.name, sum1, sum2, mean, var, moving_mean,
                                     moving_var, x.shape[0], momentum)
            return self.kernels.column_affine(x, mean, var, gamma, beta, out, xhat, epsilon)

        return self._fused_or_generic(
            "batch_norm_forward", x.ndim == 2 and self._fusable(x, gamma, beta, out, xhat,
                                                                scratch),
            fused, x, gamma, beta, epsilon, out, xhat, var, moving_mean, moving_var, momentum,
            scratch)

    def batch_norm_inference(self, x, gamma, beta, moving_mean, moving_var, epsilon, out,
                             xhat=None):
        return self._fused_or_generic(
            "batch_norm_inference", x.ndim == 2 and self._fusable(x, gamma, beta, out, xhat),
            lambda: self.kernels.column_affine(x, moving_mean, moving_var, gamma, beta, out,
                                               xhat, epsilon),
            x, gamma, beta, moving_mean, moving_var, epsilon, out, xhat)

    def batch_norm_backward(self, dy, xhat, gamma, var, epsilon, dgamma, dbeta, out, scratch,
                            batch=True):
        def fused():
            # A batch's statistics need both sums, whether gamma and beta train or not.
            cols = dy.shape[1]
            sum_dy = self._stats("bn_dbeta", cols, var.dtype) if dbeta is None else dbeta
            sum_dy_xhat = self._stats("bn_dgamma", cols, var.dtype) if dgamma is None \
                else dgamma
            self.column_sum(dy, out=sum_dy)
            self.column_sum(self.kernels.product(dy, xhat, scratch), out=sum_dy_xhat)
            return self.kernels.batch_norm_backward(dy, xhat, gamma, var, sum_dy_xhat, sum_dy,
                                                    out, epsilon, batch)

        return self._fused_or_generic(
            "batch_norm_backward", dy.ndim == 2 and self._fusable(dy, xhat, gamma, out,
                                                                  scratch),
            fused, dy, xhat, gamma, var, epsilon, dgamma, dbeta, out, scratch, batch)

    def layer_norm_forward(self, x, gamma, beta, epsilon, out, xhat, rstd, shift=None):
        return self._fused_or_generic(
            "layer_norm_forward", x.ndim == 2 and self._fusable(x, gamma, beta, out, xhat,
                                                                rstd, shift),
            lambda: self.kernels.layer_norm(x, gamma, None if shift is not None else beta,
                                            out, xhat, rstd, epsilon, shift),
            x, gamma, beta, epsilon, out, xhat, rstd, shift)

    def layer_norm_backward(self, dy, xhat, gamma, rstd, dgamma, dbeta, out, scratch,
                            shift=None):
        def fused():  # the parameter gradients first: out may be dy
            if dbeta is not None:
                self.column_sum(dy, out=dbeta)
            if dgamma is not None:
                self.column_sum(self.kernels.product(dy, xhat, scratch), out=dgamma)
            return self.kernels.layer_norm_backward(dy, xhat, gamma, rstd, out, shift)

        return self._fused_or_generic(
            "layer_norm_backward", dy.ndim == 2 and self._fusable(dy, xhat, gamma, rstd, out,
                                                                  scratch, shift),
            fused, dy, xhat, gamma, rstd, dgamma, dbeta, out, scratch, shift)

    def standardize(self, x, mean, variance, out, invert=False):
        return self._fused_or_generic(
            "standardize", x.ndim == 2 and self._fusable(x, out),
            lambda: self.kernels.column_affine(x, mean, variance, None, None, out, None,
                                               NORMALIZATION_EPSILON, clamp=True,
                                               invert=invert),
            x, mean, variance, out, invert)

    def standardize_backward(self, dy, variance, out, invert=False):
        return self._fused_or_generic(  # both directions are a per-column scale of dy
            "standardize_backward", dy.ndim == 2 and self._fusable(dy, out),
            lambda: self.kernels.column_affine(dy, None, variance, None, None, out, None,
                                               NORMALIZATION_EPSILON, clamp=True,
                                               invert=invert),
            dy, variance, out, invert)

    # ------------------------------------------------------------------- losses
    def _loss_buffers(self, tag, dtype):
        """The reduction's partial sums and a 0-d loss for ``tag``, kept alive (a captured
        graph points at them). The loss is overwritten by the next call with this tag:
        use it before the next step."""
        return self._partials(dtype), self._buffer(tag, (), dtype)

    def _partials(self, dtype):
        """The one buffer of per-block partial sums that every reduction writes then adds
        (launches on one stream run in order, so they can share it)."""
        return self._buffer("partials", (REDUCE_BLOCKS,), dtype)

    def accumulate(self, acc, value, weight):
        self.kernels.accumulate(acc, value, weight)
        return acc

    def softmax_cross_entropy(self, logits, labels, grad_out=None, weights=None,
                              label_smoothing=0.0, ignore_class=None):
        def fused():
            wanted = numpy.int64 if labels.ndim == 1 else logits.dtype
            grad = self._out(grad_out, logits)
            partials, loss = self._loss_buffers("xent_loss", logits.dtype)
            ignore = None
            if ignore_class is not None and labels.ndim == 1:
                ignore = (ignore_class, self._buffer("xent_valid", (1,), logits.dtype))
            self.kernels.softmax_cross_entropy(
                logits, self.xp.ascontiguousarray(labels, dtype=wanted), weights, grad,
                partials, loss.reshape(1), label_smoothing, ignore)
            return loss, grad

        return self._fused_or_generic(
            "softmax_cross_entropy", logits.ndim == 2 and self._fusable(logits, grad_out,
                                                                        weights),
            fused, logits, labels, grad_out, weights, label_smoothing, ignore_class)

    def _loss_fusable(self, pred, target, grad_out, weights):
        return target.dtype == pred.dtype and self._fusable(pred, target, grad_out, weights)

    def _elementwise_loss(self, kernel, pred, target, grad_out, weights, *extra):
        """The fused path of an elementwise loss: the kernel writes the gradient and a
        partial sum of the mean per block; a second launch adds those in a fixed order.
        ``extra``: the kernel's own scalars (label smoothing, delta)."""
        grad = self._out(grad_out, pred)
        partials, out = self._loss_buffers(kernel + "_loss", pred.dtype)
        self.kernels.elementwise_loss(kernel, pred, target, weights, grad, partials,
                                      out.reshape(1), *extra)
        return out, grad

    def sigmoid_binary_cross_entropy(self, logits, targets, grad_out=None, weights=None,
                                     label_smoothing=0.0):
        return self._fused_or_generic(
            "sigmoid_binary_cross_entropy",
            self._loss_fusable(logits, targets, grad_out, weights),
            lambda: self._elementwise_loss("sigmoid_bce", logits, targets, grad_out, weights,
                                           label_smoothing),
            logits, targets, grad_out, weights, label_smoothing)

    def mean_squared_error(self, pred, target, grad_out=None, weights=None):
        return self._fused_or_generic(
            "mean_squared_error", self._loss_fusable(pred, target, grad_out, weights),
            lambda: self._elementwise_loss("mse", pred, target, grad_out, weights),
            pred, target, grad_out, weights)

    def mean_absolute_error(self, pred, target, grad_out=None, weights=None):
        return self._fused_or_generic(
            "mean_absolute_error", self._loss_fusable(pred, target, grad_out, weights),
            lambda: self._elementwise_loss("mae", pred, target, grad_out, weights),
            pred, target, grad_out, weights)

    def huber(self, pred, target, delta=1.0, grad_out=None, weights=None):
        return self._fused_or_generic(
            "huber", self._loss_fusable(pred, target, grad_out, weights),
            lambda: self._elementwise_loss("huber", pred, target, grad_out, weights, delta),
            pred, target, delta, grad_out, weights)

    def add_regularization(self, weights, grads, l1, l2, total):
        return self._fused_or_generic(
            "add_regularization", self._fusable(weights, grads, total),
            lambda: self.kernels.add_regularization(weights, grads, l1, l2,
                                                    self._partials(total.dtype), total),
            weights, grads, l1, l2, total)

    # ------------------------------------------------------------- batch gather
    def gather_rows(self, x, order, cursor, out):
        return self._fused_or_generic(
            "gather_rows", x.dtype == out.dtype and x.flags.c_contiguous and
            out.flags.c_contiguous, lambda: self.kernels.gather_rows(x, order, cursor, out),
            x, order, cursor, out)

    def advance(self, counter, amount):
        self.kernels.advance(counter, amount)
        return counter

    # ------------------------------------------------------------------ metrics
    def _labels_fusable(self, scores, labels, total, weights=None):
        return scores.ndim == 2 and labels.flags.c_contiguous and \
            self._weights_ok(weights, scores) and self._fusable(scores, total) and (
                labels.dtype == numpy.int64 if labels.ndim == 1 else labels.dtype == scores.dtype)

    def _targets_fusable(self, scores, targets, total, weights=None):
        return targets.dtype == scores.dtype and self._weights_ok(weights, scores) and \
            self._fusable(scores, targets, total)

    def _weights_ok(self, weights, like):
        return weights is None or (weights.dtype == like.dtype and weights.flags.c_contiguous)

    def add_argmax_matches(self, scores, labels, total, weights=None):
        return self._fused_or_generic(
            "add_argmax_matches", self._labels_fusable(scores, labels, total, weights),
            lambda: self.kernels.add_argmax_matches(scores, labels,
                                                    self._partials(total.dtype), total,
                                                    weights),
            scores, labels, total, weights)

    def add_top_k_matches(self, scores, labels, k, total, weights=None):
        return self._fused_or_generic(
            "add_top_k_matches", self._labels_fusable(scores, labels, total, weights),
            lambda: self.kernels.add_top_k_matches(scores, labels, k,
                                                   self._partials(total.dtype), total,
                                                   weights),
            scores, labels, k, total, weights)

    def add_threshold_matches(self, scores, targets, threshold, total, weights=None):
        return self._fused_or_generic(
            "add_threshold_matches", self._targets_fusable(scores, targets, total, weights),
            lambda: self.kernels.add_threshold_matches(scores, targets, threshold,
                                                       self._partials(total.dtype), total,
                                                       weights),
            scores, targets, threshold, total, weights)

    def add_binary_counts(self, scores, targets, threshold, total, weights=None,
                          which=(0, 1, 2)):
        return self._fused_or_generic(
            "add_binary_counts", self._targets_fusable(scores, targets, total, weights),
            lambda: self.kernels.add_binary_counts(scores, targets, threshold,
                                                   self._partials(total.dtype), total,
                                                   weights, which),
            scores, targets, threshold, total, weights, which)

    def select_scores(self, scores, targets, top_k=None, class_id=None,
                      activation="linear", out=None):
        return self._fused_or_generic(
            "select_scores", out is not None and scores.ndim == 2 and
            targets.dtype == scores.dtype and self._fusable(scores, targets, *(out or ())),
            lambda: self.kernels.select_scores(scores, targets, out[0], out[1], top_k,
                                               class_id, activation),
            scores, targets, top_k, class_id, activation, out)

    def add_threshold_histogram(self, scores, targets, m, total, activation="linear",
                                weights=None):
        return self._fused_or_generic(
            "add_threshold_histogram", self._targets_fusable(scores, targets, total, weights),
            lambda: self.kernels.add_threshold_histogram(activation, scores, targets, m,
                                                         total, weights),
            scores, targets, m, total, activation, weights)

    def add_abs_error(self, pred, target, total, activation="linear", weights=None):
        return self._fused_or_generic(
            "add_abs_error", self._targets_fusable(pred, target, total, weights),
            lambda: self.kernels.add_abs_error(activation, pred, target,
                                               self._partials(total.dtype), total, weights),
            pred, target, total, activation, weights)

    def add_row_weights(self, weights, rows, total):
        if weights is None:  # rows times a persistent one, so that a graph may hold it
            self.kernels.accumulate(total, self._buffer("one", (1,), total.dtype, fill=1),
                                    rows)
            return total
        return self._fused_or_generic(
            "add_row_weights", weights.dtype == total.dtype and self._fusable(weights, total),
            lambda: self.kernels.sum(weights, self._partials(total.dtype), total, add=True),
            weights, rows, total)

    def cast(self, x, out):
        """float32 <-> bfloat16 by kernel (round to nearest even); other pairs by CuPy."""
        pair = (x.dtype.name, out.dtype.name)
        if pair in (("float32", "bfloat16"), ("bfloat16", "float32")) and \
                x.flags.c_contiguous and out.flags.c_contiguous and x.size == out.size:
            return self.kernels.cast(x, out)
        return super().cast(x, out)

    # --------------------------------------------------------------- optimizers
    def guard_finite(self, loss, step, flag, bad_step):
        loss = loss.reshape(1) if loss.dtype in self._float_types else loss.astype("float32")
        self.kernels.guard_finite(loss, step, flag, bad_step)

    def increment_step(self, step, skip=None):
        self.kernels.increment_step(step, skip)
        return step

    def weight_segments(self, bounds, dtype="float32"):
        """Also the chunk table of the clip-norm reduction and its sums, on the device."""
        segments = super().weight_segments(bounds)
        chunks, first = chunk_table(segments.bounds)
        segments.reduction = ((self.asarray(chunks), self.asarray(first)),
                              self.zeros((chunks.size - 1,), dtype))
        return segments

    def clip_scales(self, grads, clipnorm, per_weight, options):
        table, sums = options.segments.reduction
        return self.kernels.clip_scales(grads, options.accumulator, options.accumulation_steps,
                                        options.step, table, sums, clipnorm, not per_weight,
                                        options.clip_scales)

    def _apply(self, options, weight_decay, dtype):
        """The *_apply kernels' ``Apply`` for ``options`` and a uniform weight decay (a
        persistent device scalar, made by the eager step before any capture)."""
        wd = None if options is None else options.weight_decay
        if wd is None and weight_decay:
            wd = self._buffer(("weight_decay", float(weight_decay)), (1,), dtype,
                              fill=weight_decay)
        if options is None:
            return Apply(wd=wd)
        groups = None if options.segments is None else options.segments.groups
        return Apply(options.accumulator, int(options.accumulation_steps or 1),
                     float(options.clipvalue or 0), options.clip_scales, groups, wd,
                     options.ema, options.ema_momentum,
                     int(options.ema_overwrite_frequency or 0))

    def _call_step(self, step, options):
        """The step count a kernel reads: ``step``, ``options.step``, or a constant 1."""
        if step is not None:
            return step
        if options is not None:
            return options.step
        return self._buffer("first_step", (1,), "int64", fill=1)

    def sgd_update(self, params, grads, momentums, lr, momentum=0.0, nesterov=False,
                   weight_decay=0.0, skip=None, options=None):
        self.kernels.sgd_apply(params, grads, momentums, self._call_step(None, options), skip,
                               lr, momentum, nesterov,
                               self._apply(options, weight_decay, params.dtype))
        return params

    def rmsprop_update(self, params, grads, sq_avg, lr, rho=0.9, epsilon=1e-7,
                       momentum=0.0, velocity=None, weight_decay=0.0, skip=None,
                       average_gradient=None, options=None):
        self.kernels.rmsprop_apply(params, grads, sq_avg, velocity, average_gradient,
                                   self._call_step(None, options), skip, lr, rho, epsilon,
                                   momentum, self._apply(options, weight_decay, params.dtype))
        return params

    def adam_update(self, params, grads, m, v, step, lr, beta_1=0.9, beta_2=0.999,
                    epsilon=1e-7, weight_decay=0.0, decoupled_weight_decay=True, skip=None,
                    v_hat=None, options=None):
        if v_hat is None and options is None:  # the plain update, or the legacy L2 one
            self.kernels.adam(params, grads, m, v, step, skip, lr, beta_1, beta_2, epsilon,
                              weight_decay, decoupled_weight_decay)
            return params
        if not decoupled_weight_decay:
            return super().adam_update(params, grads, m, v, step, lr, beta_1, beta_2, epsilon,
                                       weight_decay, False, skip, v_hat, options)  # refuses
        self.kernels.adam_apply(params, grads, m, v, v_hat, step, skip, lr, beta_1, beta_2,
                                epsilon, self._apply(options, weight_decay, params.dtype))
        return params

    def nadam_update(self, params, grads, m, v, u_product, step, lr, beta_1=0.9,
                     beta_2=0.999, epsilon=1e-7, weight_decay=0.0, skip=None, options=None):
        self.kernels.nadam_apply(params, grads, m, v, u_product, step, skip, lr, beta_1,
                                 beta_2, epsilon,
                                 self._apply(options, weight_decay, params.dtype))
        return params

    def adagrad_update(self, params, grads, accumulator, lr, epsilon=1e-7, weight_decay=0.0,
                       skip=None, options=None):
        self.kernels.adagrad_apply(params, grads, accumulator, self._call_step(None, options),
                                   skip, lr, epsilon,
                                   self._apply(options, weight_decay, params.dtype))
        return params

    def adamax_update(self, params, grads, m, u, step, lr, beta_1=0.9, beta_2=0.999,
                      epsilon=1e-7, weight_decay=0.0, skip=None, options=None):
        self.kernels.adamax_apply(params, grads, m, u, step, skip, lr, beta_1, beta_2, epsilon,
                                  self._apply(options, weight_decay, params.dtype))
        return params

    def lion_update(self, params, grads, momentums, lr, beta_1=0.9, beta_2=0.99,
                    weight_decay=0.0, skip=None, options=None):
        self.kernels.lion_apply(params, grads, momentums, self._call_step(None, options), skip,
                                lr, beta_1, beta_2,
                                self._apply(options, weight_decay, params.dtype))
        return params

    def sgd_legacy_update(self, params, grads, velocity, lr, momentum=0.0, nesterov=False,
                          weight_decay=0.0, skip=None):
        self.kernels.sgd_legacy(params, grads, velocity, skip, lr, momentum, nesterov,
                                weight_decay)
        return params

    def rmsprop_legacy_update(self, params, grads, sq_avg, lr, rho=0.9, epsilon=1e-7,
                              momentum=0.0, velocity=None, weight_decay=0.0, skip=None):
        self.kernels.rmsprop_legacy(params, grads, sq_avg, velocity, skip, lr, rho, epsilon,
                                    momentum, weight_decay)
        return params

    def scheduled_rate(self, schedule, step, lr):
        return self.kernels.scheduled_rate(schedule, step, lr)

    # ------------------------------------------------------------------ dropout
    def dropout_mask(self, shape, rate, seed, counter, dtype="float32", out=None, offset=0):
        if not isinstance(counter, self.xp.ndarray):
            counter = self.xp.asarray([int(counter)], dtype=numpy.int64)
        mask = self.empty(shape, dtype) if out is None else out
        return self._fused_or_generic(
            "dropout_mask", self._fusable(mask),
            lambda: self.kernels.dropout_mask(mask, seed, counter, rate, offset),
            shape, rate, seed, counter, dtype=dtype, out=mask, offset=offset)

    # ------------------------------------------------------------------- graphs
    def capture(self, fn):
        """Capture ``fn`` as a CUDA graph on a side stream; ``replay()`` launches it on
        the current stream, so it stays ordered with the eager work around it.

        Everything ``fn`` touches must already exist and stay alive while the graph
        does: CuPy's memory pool has no graph-private pool, so an allocation made during
        capture could be handed to someone else afterwards while the graph still writes
        to it. ``fn`` must not read the device either (no host sync during capture).
        """
        cupy = self.xp
        side = cupy.cuda.Stream(non_blocking=True)
        side.wait_event(cupy.cuda.get_current_stream().record())
        with side:
            side.begin_capture()
            self._capturing = True
            try:
                fn()
            except BaseException as exc:
                self._capturing = False
                _abandon_capture(side, exc)
                raise
            self._capturing = False
            graph = side.end_capture()
        return _CudaGraph(cupy, graph, side, self._device)

    # -------------------------------------------------------------------- misc
    def time_device(self, fn, repeats):
        cupy = self.xp
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        self.synchronize()
        start.record()
        for _ in range(repeats):
            fn()
        stop.record()
        stop.synchronize()
        return cupy.cuda.get_elapsed_time(start, stop) / 1e3 / repeats

    def warmup(self):
        """Create the cuBLAS handle and its workspace before timing (the kernels compile
        on first use; Sequential.warmup runs a step's kernels once)."""
        self._blas()
        self.synchronize()

    def describe(self):
        cupy = self.xp
        props = cupy.cuda.runtime.getDeviceProperties(self.device_id)
        name = props["name"]
        free, total = cupy.cuda.runtime.memGetInfo()
        return {
            "backend": self.name, "device": self.device,
            "name": name.decode() if isinstance(name, bytes) else name,
            "compute_capability": f"{props['major']}.{props['minor']}",
            "memory_total_bytes": int(total), "memory_free_bytes": int(free),
            "cupy": cupy.__version__, "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "driver": cupy.cuda.runtime.driverGetVersion(), "tf32": self.tf32,
            # The device itself, whatever index CUDA_VISIBLE_DEVICES gave it here.
            "pci_bus_id": cupy.cuda.Device(self.device_id).pci_bus_id,
        }

    # ------------------------------------------------------------- host staging
    # (dnn.training.staging): page-locked host buffers, copied to the device on a
    # stream of their own, ordered against the compute stream with events. Like every
    # public method they run with the backend's device current (in the loader threads
    # too: CuPy's current device is per thread), see _every_method_on_its_device.
    def host_empty(self, shape, dtype="float32"):
        import cupyx

        return cupyx.empty_pinned(shape, dtype=dtype)

    def upload_stream(self):
        return self.xp.cuda.Stream(non_blocking=True)

    def upload(self, host, out, stream=None):
        out.set(host, stream=stream)
        return out

    def record_event(self, stream=None, event=None):
        cuda = self.xp.cuda
        if event is None:
            event = cuda.Event(disable_timing=True)
        event.record(stream if stream is not None else cuda.get_current_stream())
        return event

    def wait_event(self, event, stream=None):
        if event is not None:
            cuda = self.xp.cuda
            (stream if stream is not None else cuda.get_current_stream()).wait_event(event)

    def host_wait(self, event):
        if event is not None:
            event.synchronize()


def _abandon_capture(stream, exc):
    """End a capture that ``exc`` interrupted, keeping ``exc`` as the error: ending it
    fails too when the error invalidated the capture (cudaErrorStreamCaptureInvalidated),
    and that failure would otherwise replace the one that caused it."""
    try:
        stream.end_capture()
    except Exception as failure:
        if hasattr(exc, "add_note"):  # Python 3.11+
            exc.add_note(f"(ending the interrupted CUDA graph capture also failed: "
                         f"{type(failure).__name__}: {failure})")


class _CudaGraph:
    """A captured CUDA graph; ``replay()`` launches it on its device's current stream,
    with that device current, whichever device the caller has current."""

    def __init__(self, cupy, graph, capture_stream, device):
        self.cupy = cupy
        self.graph = graph
        self._capture_stream = capture_stream  # keep alive with the graph
        self._device = device

    def replay(self):
        with self._device:
            self.graph.launch(self.cupy.cuda.get_current_stream())
