"""CuPy backend: the NVIDIA GPU path.

Importable with neither CuPy nor a GPU: whether it can run is decided lazily by
``cupy_unavailable_reason()``. The hot elementwise and row-wise work runs in the fused
kernels of ``kernels/dnn_kernels.cu``; GEMMs go straight to cuBLAS.
"""
from __future__ import annotations

import functools
import os

import numpy

from ..kernels.catalogue import FLOAT_DTYPES, REDUCE_BLOCKS
from ..kernels.cuda import CudaRuntime
from ..kernels.launch import FusedKernels, KernelUnavailable
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


class CupyBackend(Backend):
    """``CupyBackend(device=0, tf32=None)``. TF32 GEMMs are off unless ``tf32=True``
    or the environment sets ``DNN_TF32=1``."""

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

    def _allocate(self, make, shape, dtype):
        try:
            with self._device:
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
        try:
            with self._device:
                return cupy.ascontiguousarray(cupy.asarray(x, dtype=dtype))
        except cupy.cuda.memory.OutOfMemoryError as exc:
            shape = getattr(x, "shape", numpy.shape(x))
            raise self._out_of_memory(exc, shape, dtype or getattr(x, "dtype", "float32")) \
                from exc

    def from_dlpack(self, x, name):
        kind, index = x.__dlpack_device__()
        if int(kind) == DLPACK_CUDA and int(index) == self.device_id:
            with self._device:
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
            with self._device:
                self._handle = CublasHandle(self.xp)
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

    def _zero_bias(self, cols, dtype):
        return self._buffer("zeros", (cols,), dtype, fill=0)

    def bias_activation(self, x, bias, activation, out=None, negative_slope=LEAKY_RELU_SLOPE):
        activation = check_activation(activation)
        if x.ndim == 2 and bias.dtype == x.dtype and self._fusable(x, bias, out):
            try:
                return self.kernels.bias_activation(
                    x, bias, activation, self.empty(x.shape, x.dtype) if out is None else out,
                    negative_slope)
            except KernelUnavailable:
                pass
        self._generic("bias_activation", x, bias)
        return super().bias_activation(x, bias, activation, out=out,
                                       negative_slope=negative_slope)

    def activation(self, name, x, out=None, negative_slope=LEAKY_RELU_SLOPE):
        name = check_activation(name)
        if x.ndim == 2 and self._fusable(x, out):
            return self.bias_activation(x, self._zero_bias(x.shape[1], x.dtype), name, out=out,
                                        negative_slope=negative_slope)
        self._generic("activation", x)
        return super().activation(name, x, out=out, negative_slope=negative_slope)

    def activation_backward(self, name, dy, x, y, out=None, negative_slope=LEAKY_RELU_SLOPE):
        name = check_activation(name)
        if name == "linear" and (out is None or out is dy):
            return dy
        saved = x if name in ACTIVATIONS_NEEDING_INPUT else y
        if dy.ndim == 2 and saved is not None and self._fusable(dy, saved, out):
            try:
                return self.kernels.activation_backward(
                    name, dy, x, y, self.empty(dy.shape, dy.dtype) if out is None else out,
                    negative_slope)
            except KernelUnavailable:
                pass
        self._generic("activation_backward", dy, saved)
        return super().activation_backward(name, dy, x, y, out=out,
                                           negative_slope=negative_slope)

    # ------------------------------------------------------------ normalization
    # Column statistics are column sums (cuBLAS GEMVs with a ones vector, which scale and
    # can be captured) around small fused kernels.
    def _stats(self, tag, cols, dtype):
        return self._buffer(tag, (cols,), dtype)

    def batch_norm_forward(self, x, gamma, beta, epsilon, out, xhat, var, moving_mean,
                           moving_var, momentum, scratch):
        if x.ndim == 2 and self._fusable(x, gamma, beta, out, xhat, scratch):
            cols, stats = x.shape[1], var.dtype
            sum1, sum2 = self._stats("bn_sum1", cols, stats), self._stats("bn_sum2", cols, stats)
            mean = self._stats("bn_mean", cols, stats)
            try:
                self.column_sum(x, out=sum1)
                self.kernels.center_square(x, sum1, scratch)
                self.column_sum(scratch, out=sum2)
                self.kernels.batch_stats(x.dtype.name, sum1, sum2, mean, var, moving_mean,
                                         moving_var, x.shape[0], momentum)
                return self.kernels.column_affine(x, mean, var, gamma, beta, out, xhat,
                                                  epsilon)
            except KernelUnavailable:
                pass
        self._generic("batch_norm_forward", x)
        return super().batch_norm_forward(x, gamma, beta, epsilon, out, xhat, var, moving_mean,
                                          moving_var, momentum, scratch)

    def batch_norm_inference(self, x, gamma, beta, moving_mean, moving_var, epsilon, out,
                             xhat=None):
        if x.ndim == 2 and self._fusable(x, gamma, beta, out, xhat):
            try:
                return self.kernels.column_affine(x, moving_mean, moving_var, gamma, beta, out,
                                                  xhat, epsilon)
            except KernelUnavailable:
                pass
        self._generic("batch_norm_inference", x)
        return super().batch_norm_inference(x, gamma, beta, moving_mean, moving_var, epsilon,
                                            out, xhat)

    def batch_norm_backward(self, dy, xhat, gamma, var, epsilon, dgamma, dbeta, out, scratch,
                            batch=True):
        if dy.ndim == 2 and self._fusable(dy, xhat, gamma, out, scratch):
            # A batch's statistics need both sums, whether gamma and beta train or not.
            cols = dy.shape[1]
            sum_dy = self._stats("bn_dbeta", cols, var.dtype) if dbeta is None else dbeta
            sum_dy_xhat = self._stats("bn_dgamma", cols, var.dtype) if dgamma is None \
                else dgamma
            try:
                self.column_sum(dy, out=sum_dy)
                self.column_sum(self.kernels.product(dy, xhat, scratch), out=sum_dy_xhat)
                return self.kernels.batch_norm_backward(dy, xhat, gamma, var, sum_dy_xhat,
                                                        sum_dy, out, epsilon, batch)
            except KernelUnavailable:
                pass
        self._generic("batch_norm_backward", dy)
        return super().batch_norm_backward(dy, xhat, gamma, var, epsilon, dgamma, dbeta, out,
                                           scratch, batch)

    def layer_norm_forward(self, x, gamma, beta, epsilon, out, xhat, rstd, shift=None):
        if x.ndim == 2 and self._fusable(x, gamma, beta, out, xhat, rstd, shift):
            try:
                return self.kernels.layer_norm(x, gamma, None if shift is not None else beta,
                                               out, xhat, rstd, epsilon, shift)
            except KernelUnavailable:
                pass
        self._generic("layer_norm_forward", x)
        return super().layer_norm_forward(x, gamma, beta, epsilon, out, xhat, rstd, shift)

    def layer_norm_backward(self, dy, xhat, gamma, rstd, dgamma, dbeta, out, scratch,
                            shift=None):
        if dy.ndim == 2 and self._fusable(dy, xhat, gamma, rstd, out, scratch, shift):
            try:  # the parameter gradients first: out may be dy
                if dbeta is not None:
                    self.column_sum(dy, out=dbeta)
                if dgamma is not None:
                    self.column_sum(self.kernels.product(dy, xhat, scratch), out=dgamma)
                return self.kernels.layer_norm_backward(dy, xhat, gamma, rstd, out, shift)
            except KernelUnavailable:
                pass
        self._generic("layer_norm_backward", dy)
        return super().layer_norm_backward(dy, xhat, gamma, rstd, dgamma, dbeta, out, scratch,
                                           shift)

    def standardize(self, x, mean, variance, out, invert=False):
        if x.ndim == 2 and self._fusable(x, out):
            try:
                return self.kernels.column_affine(x, mean, variance, None, None, out, None,
                                                  NORMALIZATION_EPSILON, clamp=True,
                                                  invert=invert)
            except KernelUnavailable:
                pass
        self._generic("standardize", x)
        return super().standardize(x, mean, variance, out, invert)

    def standardize_backward(self, dy, variance, out, invert=False):
        if dy.ndim == 2 and self._fusable(dy, out):
            try:  # both directions are a per-column scale of dy
                return self.kernels.column_affine(dy, None, variance, None, None, out, None,
                                                  NORMALIZATION_EPSILON, clamp=True,
                                                  invert=invert)
            except KernelUnavailable:
                pass
        self._generic("standardize_backward", dy)
        return super().standardize_backward(dy, variance, out, invert)

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
        if logits.ndim == 2 and self._fusable(logits, grad_out, weights):
            wanted = numpy.int64 if labels.ndim == 1 else logits.dtype
            labels = self.xp.ascontiguousarray(labels, dtype=wanted)
            grad = self.empty(logits.shape, logits.dtype) if grad_out is None else grad_out
            partials, loss = self._loss_buffers("xent_loss", logits.dtype)
            ignore = None
            if ignore_class is not None and labels.ndim == 1:
                ignore = (ignore_class, self._buffer("xent_valid", (1,), logits.dtype))
            try:
                self.kernels.softmax_cross_entropy(logits, labels, weights, grad, partials,
                                                   loss.reshape(1), label_smoothing, ignore)
                return loss, grad
            except KernelUnavailable:
                pass
        self._generic("softmax_cross_entropy", logits)
        return super().softmax_cross_entropy(logits, labels, grad_out, weights,
                                             label_smoothing, ignore_class)

    # ------------------------------------------------------------- batch gather
    def gather_rows(self, x, order, cursor, out):
        if x.dtype == out.dtype and x.flags.c_contiguous and out.flags.c_contiguous:
            try:
                return self.kernels.gather_rows(x, order, cursor, out)
            except KernelUnavailable:
                pass
        self._generic("gather_rows", x)
        return super().gather_rows(x, order, cursor, out)

    def advance(self, counter, amount):
        self.kernels.advance(counter, amount)
        return counter

    # ------------------------------------------------------------------ metrics
    def _weights_ok(self, weights, like):
        return weights is None or (weights.dtype == like.dtype and weights.flags.c_contiguous)

    def add_argmax_matches(self, scores, labels, total, weights=None):
        labels_ok = labels.flags.c_contiguous and (
            labels.dtype == numpy.int64 if labels.ndim == 1 else labels.dtype == scores.dtype)
        if scores.ndim == 2 and labels_ok and self._weights_ok(weights, scores) and \
                self._fusable(scores, total):
            try:
                return self.kernels.add_argmax_matches(scores, labels,
                                                       self._partials(total.dtype), total,
                                                       weights)
            except KernelUnavailable:
                pass
        self._generic("add_argmax_matches", scores, labels)
        return super().add_argmax_matches(scores, labels, total, weights)

    def add_threshold_matches(self, scores, targets, threshold, total, weights=None):
        if targets.dtype == scores.dtype and self._weights_ok(weights, scores) and \
                self._fusable(scores, targets, total):
            try:
                return self.kernels.add_threshold_matches(scores, targets, threshold,
                                                          self._partials(total.dtype), total,
                                                          weights)
            except KernelUnavailable:
                pass
        self._generic("add_threshold_matches", scores, targets)
        return super().add_threshold_matches(scores, targets, threshold, total, weights)

    def add_top_k_matches(self, scores, labels, k, total, weights=None):
        labels_ok = labels.flags.c_contiguous and (
            labels.dtype == numpy.int64 if labels.ndim == 1 else labels.dtype == scores.dtype)
        if scores.ndim == 2 and labels_ok and self._weights_ok(weights, scores) and \
                self._fusable(scores, total):
            try:
                return self.kernels.add_top_k_matches(scores, labels, k,
                                                      self._partials(total.dtype), total,
                                                      weights)
            except KernelUnavailable:
                pass
        self._generic("add_top_k_matches", scores, labels)
        return super().add_top_k_matches(scores, labels, k, total, weights)

    def add_binary_counts(self, scores, targets, threshold, total, weights=None,
                          which=(0, 1, 2)):
        if targets.dtype == scores.dtype and self._weights_ok(weights, scores) and \
                self._fusable(scores, targets, total):
            try:
                return self.kernels.add_binary_counts(scores, targets, threshold,
                                                      self._partials(total.dtype), total,
                                                      weights, which)
            except KernelUnavailable:
                pass
        self._generic("add_binary_counts", scores, targets)
        return super().add_binary_counts(scores, targets, threshold, total, weights, which)

    def select_scores(self, scores, targets, top_k=None, class_id=None,
                      activation="linear", out=None):
        if out is not None and scores.ndim == 2 and targets.dtype == scores.dtype and \
                self._fusable(scores, targets, *out):
            try:
                return self.kernels.select_scores(scores, targets, out[0], out[1], top_k,
                                                  class_id, activation)
            except KernelUnavailable:
                pass
        self._generic("select_scores", scores, targets)
        return super().select_scores(scores, targets, top_k, class_id, activation, out)

    def add_threshold_histogram(self, scores, targets, m, total, activation="linear",
                                weights=None):
        if targets.dtype == scores.dtype and self._weights_ok(weights, scores) and \
                self._fusable(scores, targets, total):
            try:
                return self.kernels.add_threshold_histogram(activation, scores, targets, m,
                                                            total, weights)
            except KernelUnavailable:
                pass
        self._generic("add_threshold_histogram", scores, targets)
        return super().add_threshold_histogram(scores, targets, m, total, activation, weights)

    def add_abs_error(self, pred, target, total, activation="linear", weights=None):
        if target.dtype == pred.dtype and self._weights_ok(weights, pred) and \
                self._fusable(pred, target, total):
            try:
                return self.kernels.add_abs_error(activation, pred, target,
                                                  self._partials(total.dtype), total, weights)
            except KernelUnavailable:
                pass
        self._generic("add_abs_error", pred, target)
        return super().add_abs_error(pred, target, total, activation, weights)

    def add_row_weights(self, weights, rows, total):
        if weights is None:  # rows times a persistent one, so that a graph may hold it
            self.kernels.accumulate(total, self._buffer("one", (1,), total.dtype, fill=1),
                                    rows)
            return total
        if weights.dtype == total.dtype and self._fusable(weights, total):
            try:
                return self.kernels.sum(weights, self._partials(total.dtype), total, add=True)
            except KernelUnavailable:
                pass
        self._generic("add_row_weights", weights)
        return super().add_row_weights(weights, rows, total)

    def cast(self, x, out):
        """float32 <-> bfloat16 by kernel (round to nearest even); other pairs by CuPy."""
        pair = (x.dtype.name, out.dtype.name)
        if pair in (("float32", "bfloat16"), ("bfloat16", "float32")) and \
                x.flags.c_contiguous and out.flags.c_contiguous and x.size == out.size:
            return self.kernels.cast(x, out)
        return super().cast(x, out)

    def _elementwise_loss(self, loss, pred, target, grad_out, weights, generic, *extra):
        """The loss kernel writes the gradient and a partial sum of the mean per block;
        a second launch adds those in a fixed order."""
        if target.dtype == pred.dtype and self._fusable(pred, target, grad_out, weights):
            grad = self.empty(pred.shape, pred.dtype) if grad_out is None else grad_out
            partials, out = self._loss_buffers(loss + "_loss", pred.dtype)
            try:
                self.kernels.elementwise_loss(loss, pred, target, weights, grad, partials,
                                              out.reshape(1), *extra)
                return out, grad
            except KernelUnavailable:
                pass
        self._generic(loss, pred, target)
        return generic()

    def sigmoid_binary_cross_entropy(self, logits, targets, grad_out=None, weights=None,
                                     label_smoothing=0.0):
        return self._elementwise_loss(
            "sigmoid_bce", logits, targets, grad_out, weights,
            lambda: super(CupyBackend, self).sigmoid_binary_cross_entropy(
                logits, targets, grad_out, weights, label_smoothing), label_smoothing)

    def mean_squared_error(self, pred, target, grad_out=None, weights=None):
        return self._elementwise_loss(
            "mse", pred, target, grad_out, weights,
            lambda: super(CupyBackend, self).mean_squared_error(pred, target, grad_out,
                                                                weights))

    def mean_absolute_error(self, pred, target, grad_out=None, weights=None):
        return self._elementwise_loss(
            "mae", pred, target, grad_out, weights,
            lambda: super(CupyBackend, self).mean_absolute_error(pred, target, grad_out,
                                                                 weights))

    def huber(self, pred, target, delta=1.0, grad_out=None, weights=None):
        return self._elementwise_loss(
            "huber", pred, target, grad_out, weights,
            lambda: super(CupyBackend, self).huber(pred, target, delta, grad_out, weights),
            delta)

    def add_regularization(self, weights, grads, l1, l2, total):
        if self._fusable(weights, grads, total):
            try:
                return self.kernels.add_regularization(weights, grads, l1, l2,
                                                       self._partials(total.dtype), total)
            except KernelUnavailable:
                pass
        self._generic("add_regularization", weights)
        return super().add_regularization(weights, grads, l1, l2, total)

    # --------------------------------------------------------------- optimizers
    def guard_finite(self, loss, step, flag, bad_step):
        loss = loss.reshape(1) if loss.dtype in self._float_types else loss.astype("float32")
        self.kernels.guard_finite(loss, step, flag, bad_step)

    def increment_step(self, step, skip=None):
        self.kernels.increment_step(step, skip)
        return step

    def sgd_update(self, params, grads, velocity, lr, momentum=0.0, nesterov=False,
                   weight_decay=0.0, skip=None):
        self.kernels.sgd(params, grads, velocity, skip, lr, momentum, nesterov, weight_decay)
        return params

    def adam_update(self, params, grads, m, v, step, lr, beta_1=0.9, beta_2=0.999,
                    epsilon=1e-7, weight_decay=0.0, decoupled_weight_decay=False, skip=None):
        self.kernels.adam(params, grads, m, v, step, skip, lr, beta_1, beta_2, epsilon,
                          weight_decay, decoupled_weight_decay)
        return params

    def rmsprop_update(self, params, grads, sq_avg, lr, rho=0.9, epsilon=1e-7,
                       momentum=0.0, velocity=None, weight_decay=0.0, skip=None):
        self.kernels.rmsprop(params, grads, sq_avg, velocity, skip, lr, rho, epsilon, momentum,
                             weight_decay)
        return params

    def scheduled_rate(self, schedule, step, lr):
        return self.kernels.scheduled_rate(schedule, step, lr)

    # ------------------------------------------------------------------ dropout
    def dropout_mask(self, shape, rate, seed, counter, dtype="float32", out=None, offset=0):
        if not isinstance(counter, self.xp.ndarray):
            counter = self.xp.asarray([int(counter)], dtype=numpy.int64)
        mask = self.empty(shape, dtype) if out is None else out
        if self._fusable(mask):
            try:
                return self.kernels.dropout_mask(mask, seed, counter, rate, offset)
            except KernelUnavailable:
                pass
        self._generic("dropout_mask", mask)
        return super().dropout_mask(shape, rate, seed, counter, dtype=dtype, out=out,
                                    offset=offset)

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
        with self._device:
            side = cupy.cuda.Stream(non_blocking=True)
            side.wait_event(cupy.cuda.get_current_stream().record())
            with side:
                side.begin_capture()
                self._capturing = True
                try:
                    fn()
                finally:
                    self._capturing = False
                    graph = side.end_capture()
            return _CudaGraph(cupy, graph, side)

    # -------------------------------------------------------------------- misc
    def time_device(self, fn, repeats):
        cupy = self.xp
        with self._device:
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


class _CudaGraph:
    """A captured CUDA graph; ``replay()`` launches it on the current stream."""

    def __init__(self, cupy, graph, capture_stream):
        self.cupy = cupy
        self.graph = graph
        self._capture_stream = capture_stream  # keep alive with the graph

    def replay(self):
        self.graph.launch(self.cupy.cuda.get_current_stream())
