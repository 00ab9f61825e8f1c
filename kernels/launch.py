"""Typed launchers for the fused kernels: the one place in Python where a kernel's
arguments are listed.

``FusedKernels(runtime)`` runs on the GPU with ``kernels.cuda.CudaRuntime`` and on the
CPU with ``kernels.host.HostRuntime`` (the same source built by the host compiler), so
the tests exercise exactly the calls the CuPy backend makes. Each method names its
kernel, the launch shape and the arguments; the runtime converts every argument to the
C type that the parsed signature in ``dnn_kernels.cu`` declares.

Arrays are C-contiguous and of the kernel's dtype; ``out``-style arguments are filled
in place. Nothing here allocates.
"""
from __future__ import annotations

from .catalogue import kernels as catalogue
from .reference import ACTIVATIONS_NEEDING_INPUT

# Launch shapes: "grid" spreads ``work`` items over enough blocks of a grid-stride
# loop; "block" is one block (a block-wide reduction); "thread" one thread (scalar
# bookkeeping on device memory).
GRID, BLOCK, THREAD = "grid", "block", "thread"


class KernelUnavailable(LookupError):
    """The kernel is not built for this dtype (its ``// dnn:kernel`` line lists the
    dtypes it is); callers fall back to composed operations."""


class FusedKernels:
    """The fused kernels of one device (or of the host build), by operation."""

    def __init__(self, runtime):
        self.runtime = runtime
        self._entries = {}

    def _launch(self, kernel, dtype, shape, work, args, activation=None):
        key = (kernel, dtype, activation)
        entry = self._entries.get(key)
        if entry is None:
            spec = catalogue()[kernel]
            if dtype not in (spec.dtypes or (None,)):
                raise KernelUnavailable(f"kernel {kernel} is built for "
                                        f"{', '.join(spec.dtypes)}; not for {dtype}")
            entry = self._entries[key] = self.runtime.entry(spec, dtype, activation)
        self.runtime.launch(entry, shape, work, args)

    # ---------------------------------------------------------------- activations
    def bias_activation(self, x, bias, activation, out):
        """``out = activation(x + bias)`` for 2-D ``x``; ``bias`` (cols,); out may be x."""
        rows, cols = x.shape
        if activation == "softmax":
            self._launch("bias_softmax", x.dtype.name, GRID, rows, (x, bias, out, rows, cols))
        else:
            self._launch("bias_act", x.dtype.name, GRID, x.size,
                         (x, bias, out, x.size, cols), activation)
        return out

    def activation_backward(self, activation, dy, x, y, out):
        """``out = dy * activation'``, from the input ``x`` (gelu) or the output ``y``
        (every other activation); out may be dy."""
        if activation == "softmax":
            rows, cols = dy.shape
            self._launch("softmax_backward", dy.dtype.name, GRID, rows,
                         (dy, y, out, rows, cols))
        else:
            needs_x = activation in ACTIVATIONS_NEEDING_INPUT
            self._launch("act_backward", dy.dtype.name, GRID, dy.size,
                         (dy, x if needs_x else None, None if needs_x else y, out, dy.size),
                         activation)
        return out

    # --------------------------------------------------------------------- losses
    def softmax_cross_entropy(self, logits, labels, grad, row_loss):
        """Per-row shares of the mean loss into ``row_loss`` (rows,) and the gradient;
        ``labels`` int64 (rows,) or target rows of the logits' dtype."""
        rows, cols = logits.shape
        kernel = "softmax_xent_sparse" if labels.ndim == 1 else "softmax_xent_dense"
        self._launch(kernel, logits.dtype.name, GRID, rows,
                     (logits, labels, grad, row_loss, rows, cols, 1.0 / rows))

    def elementwise_loss(self, loss, pred, target, grad, parts):
        """``loss`` "sigmoid_bce" (pred holds logits) or "mse": each element's share of
        the mean into ``parts``, and the gradient."""
        self._launch(loss, pred.dtype.name, GRID, pred.size,
                     (pred, target, grad, parts, pred.size, 1.0 / pred.size))

    def sum_to_scalar(self, x, out):
        """``out[0] = x.sum()`` in a fixed order, with no temporary storage."""
        self._launch("sum_to_scalar", x.dtype.name, BLOCK, x.size, (x, x.size, out))
        return out

    def accumulate(self, acc, value, weight):
        """``acc[0] += value[0] * weight`` on the device."""
        self._launch("accumulate", acc.dtype.name, THREAD, 1, (acc, value, weight))

    def guard_finite(self, loss, step, flag, bad_step):
        """Record the first step whose loss is not finite (see the kernel)."""
        self._launch("guard_finite", loss.dtype.name, THREAD, 1, (loss, step, flag, bad_step))

    # ----------------------------------------------------------------- optimizers
    def increment_step(self, step, skip=None):
        self._launch("increment_step", None, THREAD, 1, (step, skip))

    def adam(self, p, g, m, v, step, skip, lr, beta_1, beta_2, epsilon, weight_decay,
             decoupled):
        """One Adam/AdamW update at the 1-based step held in ``step``."""
        l2 = weight_decay if not decoupled else 0.0
        decay = 1.0 - lr * weight_decay if decoupled else 1.0
        self._launch("adam", p.dtype.name, GRID, p.size,
                     (p, g, m, v, step, skip, p.size, lr, beta_1, beta_2, epsilon, l2, decay))

    def sgd(self, p, g, velocity, skip, lr, momentum, nesterov, weight_decay):
        self._launch("sgd", p.dtype.name, GRID, p.size,
                     (p, g, velocity, skip, p.size, lr, momentum, int(bool(nesterov)),
                      weight_decay))

    def rmsprop(self, p, g, sq_avg, velocity, skip, lr, rho, epsilon, momentum, weight_decay):
        self._launch("rmsprop", p.dtype.name, GRID, p.size,
                     (p, g, sq_avg, velocity, skip, p.size, lr, rho, epsilon, momentum,
                      weight_decay))

    # -------------------------------------------------------------- mixed precision
    def dropout_mask(self, out, seed, counter, rate):
        """Inverted-dropout mask into ``out`` from ``(seed, counter[0])``."""
        self._launch("dropout_mask", out.dtype.name, GRID, out.size,
                     (out, seed, counter, out.size, rate))
        return out

    def cast(self, x, out):
        """float32 <-> bfloat16, rounding to nearest even."""
        kernel = "cast_f32_bf16" if x.dtype.name == "float32" else "cast_bf16_f32"
        self._launch(kernel, None, GRID, x.size, (x, out, x.size))
        return out
