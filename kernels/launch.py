"""Typed launchers for the fused kernels: the one place in Python where a kernel's
arguments are listed.

``FusedKernels(runtime)`` runs on the GPU with ``kernels.cuda.CudaRuntime`` and on the
CPU with ``kernels.host.HostRuntime`` (the same source built by the host compiler), so
the tests exercise exactly the calls the CuPy backend makes. Each method names its
kernel, the launch shape and the arguments; the runtime converts every argument to the
C type that the parsed signature in ``dnn_kernels.cu`` declares.

Arrays are C-contiguous and of the kernel's dtype; ``out``-style arguments are filled
in place. No launch allocates (``chunk_table`` builds a host table once, at an
optimizer's build).
"""
from __future__ import annotations

import typing

import numpy

from .catalogue import MAX_BLOCKS, REDUCE_BLOCKS, THREADS, kernels as catalogue
from .reference import ACTIVATIONS_NEEDING_INPUT, LEAKY_RELU_SLOPE

# Launch shapes. Every grid scales with its work:
# GRID      ``work`` elements, one per thread of a grid-stride loop: ceil(work / THREADS)
#           blocks, at most MAX_BLOCKS;
# REDUCE    the same, at most REDUCE_BLOCKS: each block writes one partial sum;
# STREAM    the same cap, for the optimizer updates: each thread streams a few 16-byte
#           packs and computes the step's scalars once, and 1024 blocks fill a GPU;
# ROWS      ``work`` rows, a group of ``group`` threads per row, THREADS // group rows
#           per block, at most MAX_BLOCKS (ROWS_REDUCE: at most REDUCE_BLOCKS);
# BLOCK     one block (the second launch of a reduction);
# THREAD    one thread (scalar bookkeeping in device memory).
GRID, REDUCE, STREAM, ROWS, ROWS_REDUCE, BLOCK, THREAD = (
    "grid", "reduce", "stream", "rows", "rows_reduce", "block", "thread")


def launch_config(shape, work, group=1, threads=THREADS):
    """``(blocks, threads)`` of a launch, for blocks of ``threads`` (THREADS on a GPU)."""
    if shape == THREAD:
        return 1, 1
    if shape == BLOCK:
        return 1, threads
    per_block = threads // group if shape in (ROWS, ROWS_REDUCE) else threads
    cap = REDUCE_BLOCKS if shape in (REDUCE, STREAM, ROWS_REDUCE) else MAX_BLOCKS
    return max(1, min(cap, -(-int(work) // per_block))), threads


def row_group(cols, threads=THREADS):
    """Threads per row of a row-wise kernel: the power of two at or above ``cols``, at
    most a block. Rows narrower than a warp share one; a row wider than a block is
    strided by the block's threads, one row per block (so a few rows of many columns
    leave much of a large GPU idle)."""
    return min(threads, 1 << max(0, int(cols) - 1).bit_length())


class Apply(typing.NamedTuple):
    """What Keras 3's apply adds around a rule, as the *_apply kernels take it, in the
    order of their last parameters (see the kernel source); each feature is off by
    default (None, 1 or 0)."""

    grad_acc: object = None  # the gradient accumulator, with accumulate = k > 1
    accumulate: int = 1
    clipvalue: float = 0.0
    clip_scale: object = None  # per segment, from clip_scales
    groups: object = None  # int32, the segment of each SEGMENT_GROUP elements
    wd: object = None  # weight decay per segment
    ema: object = None
    ema_momentum: float = 0.0
    ema_every: int = 0


NO_APPLY = Apply()
# At most about this many chunks in a clip-norm reduction: its second launch adds them
# in one block per segment, so they stay few, however large the buffer.
MAX_CHUNKS = 4 * REDUCE_BLOCKS


def chunk_table(bounds):
    """``(chunk bounds, first chunk of each segment)``, both int64 host arrays, for the
    segments ``[bounds[s], bounds[s + 1])``: each segment cut into chunks of at most a
    chunk size (a multiple of THREADS chosen so that there are about MAX_CHUNKS), which
    one block each sums in the first launch of ``clip_scales``."""
    bounds = numpy.asarray(bounds, numpy.int64)
    per_chunk = THREADS * max(1, -(-int(bounds[-1] - bounds[0]) // (THREADS * MAX_CHUNKS)))
    counts = numpy.maximum(1, -(-numpy.diff(bounds) // per_chunk))
    first = numpy.concatenate([[0], numpy.cumsum(counts)]).astype(numpy.int64)
    segment = numpy.repeat(numpy.arange(counts.size), counts)
    within = numpy.arange(first[-1]) - first[segment]
    starts = numpy.minimum(bounds[segment] + within * per_chunk, bounds[segment + 1])
    return numpy.append(starts, bounds[-1]).astype(numpy.int64), first


class KernelUnavailable(LookupError):
    """The kernel is not built for this dtype (its ``// dnn:kernel`` line lists the
    dtypes it is); callers fall back to composed operations."""


class FusedKernels:
    """The fused kernels of one device (or of the host build), by operation."""

    def __init__(self, runtime):
        self.runtime = runtime
        # Threads per block: THREADS on a GPU; the host build's own (a build parameter).
        self.threads = getattr(runtime, "threads", THREADS)
        self._entries = {}

    def _row_group(self, cols):
        return row_group(cols, self.threads)

    def _launch(self, kernel, dtype, shape, work, args, activation=None, group=1):
        key = (kernel, dtype, activation)
        entry = self._entries.get(key)
        if entry is None:
            spec = catalogue()[kernel]
            if dtype not in (spec.dtypes or (None,)):
                raise KernelUnavailable(f"kernel {kernel} is built for "
                                        f"{', '.join(spec.dtypes)}; not for {dtype}")
            entry = self._entries[key] = self.runtime.entry(spec, dtype, activation)
        self.runtime.launch(entry, launch_config(shape, work, group, self.threads), args)

    # ---------------------------------------------------------------- activations
    def bias_activation(self, x, bias, activation, out, negative_slope=LEAKY_RELU_SLOPE):
        """``out = activation(x + bias)`` for 2-D ``x``; ``bias`` (cols,); out may be x;
        ``negative_slope``: leaky_relu's."""
        rows, cols = x.shape
        if activation == "softmax":
            group = self._row_group(cols)
            self._launch("bias_softmax", x.dtype.name, ROWS, rows,
                         (x, bias, out, rows, cols, group), group=group)
        else:
            self._launch("bias_act", x.dtype.name, GRID, x.size,
                         (x, bias, out, x.size, cols, negative_slope), activation)
        return out

    def activation_backward(self, activation, dy, x, y, out, negative_slope=LEAKY_RELU_SLOPE):
        """``out = dy * activation'``, from the input ``x`` (gelu) or the output ``y``
        (every other activation); out may be dy."""
        if activation == "softmax":
            rows, cols = dy.shape
            group = self._row_group(cols)
            self._launch("softmax_backward", dy.dtype.name, ROWS, rows,
                         (dy, y, out, rows, cols, group), group=group)
        else:
            needs_x = activation in ACTIVATIONS_NEEDING_INPUT
            self._launch("act_backward", dy.dtype.name, GRID, dy.size,
                         (dy, x if needs_x else None, None if needs_x else y, out, dy.size,
                          negative_slope), activation)
        return out

    # -------------------------------------------------------------- normalization
    def center_square(self, x, colsum, out):
        """``out = (x - colsum / rows)**2`` in the statistics dtype."""
        rows, cols = x.shape
        self._launch("center_square", x.dtype.name, GRID, x.size, (x, colsum, out, rows, cols))
        return out

    def product(self, a, b, out):
        """``out = a * b`` in the statistics dtype."""
        self._launch("product", a.dtype.name, GRID, a.size, (a, b, out, a.size))
        return out

    def batch_stats(self, dtype, sum1, sum2, mean, var, moving_mean, moving_var, rows,
                    momentum):
        """Per column mean and variance from the sums; moving statistics move when
        ``momentum`` >= 0 (pass -1 to leave them)."""
        cols = sum1.shape[0]
        self._launch("batch_stats", dtype, GRID, cols,
                     (sum1, sum2, mean, var, moving_mean, moving_var, rows, cols, momentum))

    def column_affine(self, x, mean, var, gamma, beta, out, xhat, epsilon, clamp=False,
                      invert=False):
        """``out = gamma * (x - mean) / d + beta`` per column (see the kernel for d), or
        with ``invert`` ``out = x * d + mean``."""
        rows, cols = x.shape
        self._launch("column_affine", x.dtype.name, GRID, x.size,
                     (x, mean, var, gamma, beta, out, xhat, rows, cols, epsilon, int(clamp),
                      int(invert)))
        return out

    def batch_norm_backward(self, dy, xhat, gamma, var, dgamma, dbeta, out, epsilon,
                            batch=True):
        rows, cols = dy.shape
        self._launch("batch_norm_backward", dy.dtype.name, GRID, dy.size,
                     (dy, xhat, gamma, var, dgamma, dbeta, out, rows, cols, epsilon,
                      int(batch)))
        return out

    def layer_norm(self, x, gamma, beta, out, xhat, rstd, epsilon, shift=None):
        """Each row normalized (gamma, beta may be None); with ``shift`` (a (rows,)
        buffer for each row's mean * rstd) it is RMS scaling: no centring, no beta."""
        rows, cols = x.shape
        group = self._row_group(cols)
        self._launch("layer_norm", x.dtype.name, ROWS, rows,
                     (x, gamma, beta, out, xhat, rstd, shift, rows, cols, epsilon,
                      int(shift is not None), group), group=group)
        return out

    def layer_norm_backward(self, dy, xhat, gamma, rstd, out, shift=None):
        rows, cols = dy.shape
        group = self._row_group(cols)
        self._launch("layer_norm_backward", dy.dtype.name, ROWS, rows,
                     (dy, xhat, gamma, rstd, shift, out, rows, cols, int(shift is not None),
                      group), group=group)
        return out

    # --------------------------------------------------------------------- losses
    def softmax_cross_entropy(self, logits, labels, weights, grad, partials, out,
                              smoothing=0.0, ignore=None):
        """The mean loss into ``out`` (1 element) and its gradient into ``grad``;
        ``labels`` int64 (rows,) or target rows of the logits' dtype; ``weights`` per
        row or None; ``partials`` holds REDUCE_BLOCKS values (see ``sum``). ``ignore``
        (integer labels only): ``(ignore_class, valid)``, the rows of that label left
        out and the mean taken over the others, whose count goes to ``valid`` (1
        element, the logits' dtype)."""
        rows, cols = logits.shape
        group = self._row_group(cols)
        args = (logits, labels, weights, grad, partials, rows, cols, 1.0 / rows, smoothing,
                group)
        if labels.ndim == 1:
            label, valid = (-1, None) if ignore is None else ignore
            if valid is not None:
                self._launch("count_labels_other_than", logits.dtype.name, REDUCE, rows,
                             (labels, partials, rows, label))
                self._reduce_partials(partials, valid)
            self._launch("softmax_xent_sparse", logits.dtype.name, ROWS_REDUCE, rows,
                         args + (label, valid), group=group)
        else:
            self._launch("softmax_xent_dense", logits.dtype.name, ROWS_REDUCE, rows, args,
                         group=group)
        return self._reduce_partials(partials, out)

    def elementwise_loss(self, loss, pred, target, weights, grad, partials, out, *extra):
        """``loss`` "sigmoid_bce" (pred holds logits; extra: label smoothing), "mse",
        "mae" or "huber" (extra: delta): the mean over all elements, each weighted by
        its row's weight (``weights`` (rows,) or None), into ``out`` (1 element), and
        the gradient."""
        self._launch(loss, pred.dtype.name, REDUCE, pred.size,
                     (pred, target, weights, grad, partials, pred.size, pred.shape[-1],
                      1.0 / pred.size, *extra))
        return self._reduce_partials(partials, out)

    def add_regularization(self, weights, grads, l1, l2, partials, total):
        """``total[0] +=`` the penalty of ``weights``; its gradient is added to
        ``grads`` unless that is None."""
        self._launch("regularize", weights.dtype.name, REDUCE, weights.size,
                     (weights, grads, partials, weights.size, l1, l2))
        return self._reduce_partials(partials, total, add=True)

    def sum(self, x, partials, out, add=False):
        """``out[0] = x.sum()`` (``+=`` with ``add``): a partial sum per block into
        ``partials`` (REDUCE_BLOCKS elements), then one block adds them, in a fixed
        order, with no temporary storage (so a captured graph may hold it)."""
        self._launch("block_sums", x.dtype.name, REDUCE, x.size, (x, x.size, partials))
        return self._reduce_partials(partials, out, add=add)

    def _reduce_partials(self, partials, out, add=False):
        self._launch("reduce_partials", out.dtype.name, BLOCK, REDUCE_BLOCKS,
                     (partials, out, int(add)))
        return out

    # -------------------------------------------------------------------- metrics
    # ``weights``: per-row weights (rows,) that weight each row's contribution (Keras'
    # weighted_metrics), or None.
    def add_argmax_matches(self, scores, labels, partials, total, weights=None):
        """``total[0] +=`` the rows whose argmax is the label (int64 (rows,)) or the
        argmax of the target row."""
        rows, cols = scores.shape
        group = self._row_group(cols)
        sparse = labels.ndim == 1
        self._launch("argmax_matches", scores.dtype.name, ROWS_REDUCE, rows,
                     (scores, labels if sparse else None, None if sparse else labels,
                      weights, partials, rows, cols, group), group=group)
        return self._reduce_partials(partials, total, add=True)

    def add_threshold_matches(self, scores, targets, threshold, partials, total,
                              weights=None):
        """``total[0] +=`` the elements where scores > threshold agrees with targets > 0.5."""
        self._launch("threshold_matches", scores.dtype.name, REDUCE, scores.size,
                     (scores, targets, weights, partials, scores.size, _cols(scores),
                      threshold))
        return self._reduce_partials(partials, total, add=True)

    def add_top_k_matches(self, scores, labels, k, partials, total, weights=None):
        """``total[0] +=`` the rows whose label (int64 ids, or the argmax of target rows)
        is among the ``k`` highest scores."""
        rows, cols = scores.shape
        group = self._row_group(cols)
        sparse = labels.ndim == 1
        self._launch("top_k_matches", scores.dtype.name, ROWS_REDUCE, rows,
                     (scores, labels if sparse else None, None if sparse else labels,
                      weights, partials, rows, cols, k, group), group=group)
        return self._reduce_partials(partials, total, add=True)

    def add_binary_counts(self, scores, targets, threshold, partials, totals, weights=None,
                          which=(0, 1, 2)):
        """``totals[j] +=`` count ``which[j]`` of (true positives, predicted positives,
        actual positives) at ``threshold``, a target being positive when it is not 0."""
        for slot, count in enumerate(which):
            self._launch("binary_counts", scores.dtype.name, REDUCE, scores.size,
                         (scores, targets, weights, partials, scores.size, _cols(scores),
                          threshold, count))
            self._reduce_partials(partials, totals[slot:slot + 1], add=True)
        return totals

    def select_scores(self, scores, targets, out, out_targets, top_k=None, class_id=None,
                      activation="linear"):
        """Precision's and recall's view of a batch (see the kernel): ``out`` and
        ``out_targets`` are (rows, 1) with ``class_id``, else shaped like ``scores``;
        ``activation``: "softmax", "sigmoid" or "linear", applied first."""
        rows, cols = scores.shape
        group = self._row_group(cols)
        self._launch("select_scores", scores.dtype.name, ROWS, rows,
                     (scores, targets, out, out_targets, rows, cols, top_k or 0,
                      -1 if class_id is None else class_id, int(activation == "softmax"),
                      int(activation == "sigmoid"), group), group=group)
        return out, out_targets

    def add_threshold_histogram(self, activation, scores, targets, m, counts, weights=None,
                                negative_slope=LEAKY_RELU_SLOPE):
        """``counts`` (2 (m + 1) running totals) += the AUC histogram of the batch."""
        self._launch("threshold_histogram", scores.dtype.name, GRID, scores.size,
                     (scores, targets, weights, counts, scores.size, _cols(scores), m,
                      negative_slope), activation)
        return counts

    def add_abs_error(self, activation, pred, target, partials, total, weights=None,
                      negative_slope=LEAKY_RELU_SLOPE):
        """``total[0] +=`` the sum of |activation(pred) - target| (an elementwise
        activation)."""
        self._launch("abs_error", pred.dtype.name, REDUCE, pred.size,
                     (pred, target, weights, partials, pred.size, _cols(pred), negative_slope),
                     activation)
        return self._reduce_partials(partials, total, add=True)

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
        """One Adam/AdamW update at the 1-based step held in ``step``; ``lr`` is a (1,)
        device array."""
        self._launch("adam", p.dtype.name, STREAM, p.size,
                     (p, g, m, v, step, skip, p.size, lr, beta_1, beta_2, epsilon,
                      weight_decay, int(bool(decoupled))))

    def sgd_legacy(self, p, g, velocity, skip, lr, momentum, nesterov, weight_decay):
        """PyTorch's momentum SGD with L2 decay: only to resume files of the old formula."""
        self._launch("sgd_legacy", p.dtype.name, STREAM, p.size,
                     (p, g, velocity, skip, p.size, lr, momentum, int(bool(nesterov)),
                      weight_decay))

    def rmsprop_legacy(self, p, g, sq_avg, velocity, skip, lr, rho, epsilon, momentum,
                       weight_decay):
        """RMSprop with epsilon outside the root: only to resume files of the old formula."""
        self._launch("rmsprop_legacy", p.dtype.name, STREAM, p.size,
                     (p, g, sq_avg, velocity, skip, p.size, lr, rho, epsilon, momentum,
                      weight_decay))

    # Keras 3's updates, each inside its apply (``Apply``: accumulation, clipping, weight
    # decay, the moving average). ``step`` is the int64 (1,) count of this call, ``lr``
    # a (1,) device array; state arrays a rule does not use may be None.
    def sgd_apply(self, p, g, momentums, step, skip, lr, momentum, nesterov, apply):
        self._launch("sgd_apply", p.dtype.name, STREAM, p.size,
                     (p, g, momentums, step, skip, p.size, lr, momentum, int(bool(nesterov)),
                      *apply))

    def rmsprop_apply(self, p, g, sq_avg, velocity, average, step, skip, lr, rho, epsilon,
                      momentum, apply):
        self._launch("rmsprop_apply", p.dtype.name, STREAM, p.size,
                     (p, g, sq_avg, velocity, average, step, skip, p.size, lr, rho, epsilon,
                      momentum, *apply))

    def adam_apply(self, p, g, m, v, v_hat, step, skip, lr, beta_1, beta_2, epsilon, apply):
        self._launch("adam_apply", p.dtype.name, STREAM, p.size,
                     (p, g, m, v, v_hat, step, skip, p.size, lr, beta_1, beta_2, epsilon,
                      *apply))

    def nadam_apply(self, p, g, m, v, u_product, step, skip, lr, beta_1, beta_2, epsilon,
                    apply):
        """``u_product``: float64 (2,), the momentum schedule's running product."""
        self._launch("nadam_apply", p.dtype.name, STREAM, p.size,
                     (p, g, m, v, u_product, step, skip, p.size, lr, beta_1, beta_2, epsilon,
                      *apply))

    def adagrad_apply(self, p, g, accumulator, step, skip, lr, epsilon, apply):
        self._launch("adagrad_apply", p.dtype.name, STREAM, p.size,
                     (p, g, accumulator, step, skip, p.size, lr, epsilon, *apply))

    def adamax_apply(self, p, g, m, u, step, skip, lr, beta_1, beta_2, epsilon, apply):
        self._launch("adamax_apply", p.dtype.name, STREAM, p.size,
                     (p, g, m, u, step, skip, p.size, lr, beta_1, beta_2, epsilon, *apply))

    def lion_apply(self, p, g, m, step, skip, lr, beta_1, beta_2, apply):
        self._launch("lion_apply", p.dtype.name, STREAM, p.size,
                     (p, g, m, step, skip, p.size, lr, beta_1, beta_2, *apply))

    def clip_scales(self, g, grad_acc, accumulate, step, chunks, sums, clipnorm, joint, scale):
        """``scale`` (one per segment) = Keras' clip factor of each segment's gradient
        (``joint``: of their joint norm), from the chunk table ``chunks`` (see
        ``chunk_table``) and its ``sums`` buffer (one slot per chunk)."""
        bounds, first = chunks
        n_chunks, segments = bounds.size - 1, first.size - 1
        self._launch("segment_square_sums", g.dtype.name, ROWS, n_chunks,
                     (g, grad_acc, accumulate, step, bounds, n_chunks, sums), group=THREADS)
        self._launch("segment_clip_scales", g.dtype.name, BLOCK if joint else ROWS,
                     1 if joint else segments,
                     (sums, first, segments, clipnorm, int(bool(joint)), scale), group=THREADS)
        return scale

    def scheduled_rate(self, schedule, step, lr):
        """``lr[0]`` = the rate of an encoded schedule (float64) at the step count."""
        self._launch("scheduled_rate", lr.dtype.name, THREAD, 1, (schedule, step, lr))
        return lr

    # -------------------------------------------------------------- batch gather
    def gather_rows(self, src, order, cursor, out):
        """``out = src[order[cursor[0] : cursor[0] + len(out)]]`` (rows); ``order`` and
        ``cursor`` are int64 device arrays."""
        rows = out.shape[0]
        cols = out.size // rows
        self._launch("gather_rows", src.dtype.name, GRID, out.size,
                     (src, order, cursor, out, rows, cols))
        return out

    def advance(self, counter, amount):
        """``counter[0] += amount`` (int64) on the device."""
        self._launch("advance", None, THREAD, 1, (counter, amount))

    # -------------------------------------------------------------- mixed precision
    def dropout_mask(self, out, seed, counter, rate, offset=0):
        """Inverted-dropout mask into ``out`` from ``(seed, counter[0])``, element ``i``
        hashed as element ``offset + i``."""
        self._launch("dropout_mask", out.dtype.name, GRID, out.size,
                     (out, seed, counter, offset, out.size, rate))
        return out

    def cast(self, x, out):
        """float32 <-> bfloat16, rounding to nearest even."""
        kernel = "cast_f32_bf16" if x.dtype.name == "float32" else "cast_bf16_f32"
        self._launch(kernel, None, GRID, x.size, (x, out, x.size))
        return out


def _cols(x):
    """Elements per row of a (rows, cols) or flat array."""
    return x.shape[-1] if x.ndim > 1 else 1
