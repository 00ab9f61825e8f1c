"""Each fused backend op against its unfused composition (the generic ``Backend``
method, run on the same library), in GB/s beside the device's copy bandwidth."""
from __future__ import annotations

import numpy

from dnn.backends import Backend

from .timing import measure


def _cases(backend, n_params, rows, cols, dtype):
    """(name, bytes moved, fused call, unfused call) for each op."""
    be = backend
    rng = numpy.random.default_rng(0)
    item = numpy.dtype(dtype).itemsize

    def buf(*shape):
        return be.asarray(rng.standard_normal(shape), dtype=dtype)

    p, g, m, v = buf(n_params), buf(n_params), buf(n_params), be.zeros((n_params,), dtype)
    v = be.asarray(numpy.abs(rng.standard_normal(n_params)), dtype=dtype)
    step = be.asarray(numpy.ones(1, numpy.int64))  # the 1-based step of the update
    lr = be.asarray(numpy.full(1, 1e-9), dtype=dtype)  # the rate, in device memory
    z, b = buf(rows, cols), buf(cols)
    y = be.asarray(numpy.abs(rng.standard_normal((rows, cols))), dtype=dtype)
    dy = buf(rows, cols)
    out = be.empty((rows, cols), dtype)
    db = be.empty((cols,), dtype)
    logits = buf(rows, 10)
    labels = be.asarray(rng.integers(0, 10, rows))
    targets = be.asarray(rng.integers(0, 2, (rows, cols)), dtype=dtype)
    generic = Backend
    gamma, beta, feat = buf(cols), buf(cols), be.empty((cols,), dtype)
    mean, var = be.zeros((cols,), dtype), be.asarray(numpy.ones(cols), dtype=dtype)
    xhat, scratch, rstd = be.empty((rows, cols), dtype), be.empty((rows, cols), dtype), \
        be.empty((rows,), dtype)
    dgamma, dbeta = be.empty((cols,), dtype), be.empty((cols,), dtype)
    scores = be.asarray(rng.uniform(0, 1, (rows * 16, 1)), dtype=dtype)
    labels01 = be.asarray(rng.integers(0, 2, (rows * 16, 1)), dtype=dtype)
    histogram = be.zeros((2 * 201,), dtype)
    # Bytes one pass must move: BN forward reads x twice (statistics, then normalize)
    # and writes y and xhat; its backward reads dy and xhat, writes dx.
    normalization = [
        ("batch_norm_forward", 4 * rows * cols * item,
         lambda: be.batch_norm_forward(z, gamma, beta, 1e-3, out, xhat, feat, mean, var, 0.99,
                                       scratch),
         lambda: generic.batch_norm_forward(be, z, gamma, beta, 1e-3, out, xhat, feat, mean,
                                            var, 0.99, scratch)),
        ("batch_norm_backward", 3 * rows * cols * item,
         lambda: be.batch_norm_backward(dy, xhat, gamma, var, 1e-3, dgamma, dbeta, out,
                                        scratch, True),
         lambda: generic.batch_norm_backward(be, dy, xhat, gamma, var, 1e-3, dgamma, dbeta,
                                             out, scratch, True)),
        ("layer_norm_forward", 3 * rows * cols * item,
         lambda: be.layer_norm_forward(z, gamma, beta, 1e-3, out, xhat, rstd),
         lambda: generic.layer_norm_forward(be, z, gamma, beta, 1e-3, out, xhat, rstd)),
        ("layer_norm_backward", 3 * rows * cols * item,
         lambda: be.layer_norm_backward(dy, xhat, gamma, rstd, dgamma, dbeta, out, scratch),
         lambda: generic.layer_norm_backward(be, dy, xhat, gamma, rstd, dgamma, dbeta, out,
                                             scratch)),
        ("standardize", 2 * rows * cols * item,
         lambda: be.standardize(z, mean, var, out),
         lambda: generic.standardize(be, z, mean, var, out)),
        ("auc_histogram(200)", 2 * rows * 16 * item,
         lambda: be.add_threshold_histogram(scores, labels01, 200, histogram),
         lambda: generic.add_threshold_histogram(be, scores, labels01, 200, histogram)),
    ]
    return normalization + [
        ("adam_update", 7 * n_params * item,
         lambda: be.adam_update(p, g, m, v, step, lr),
         lambda: generic.adam_update(be, p, g, m, v, step, lr)),
        ("sgd_update(momentum)", 5 * n_params * item,
         lambda: be.sgd_update(p, g, m, lr, momentum=0.9),
         lambda: generic.sgd_update(be, p, g, m, lr, momentum=0.9)),
        ("rmsprop_update", 5 * n_params * item,
         lambda: be.rmsprop_update(p, g, v, lr),
         lambda: generic.rmsprop_update(be, p, g, v, lr)),
        ("bias_activation(relu)", 2 * rows * cols * item,
         lambda: be.bias_activation(z, b, "relu", out=out),
         lambda: generic.bias_activation(be, z, b, "relu", out=out)),
        ("bias_activation(sigmoid)", 2 * rows * cols * item,
         lambda: be.bias_activation(z, b, "sigmoid", out=out),
         lambda: generic.bias_activation(be, z, b, "sigmoid", out=out)),
        ("activation_backward(relu)", 3 * rows * cols * item,
         lambda: be.activation_backward("relu", dy, None, y, out=out),
         lambda: generic.activation_backward(be, "relu", dy, None, y, out=out)),
        ("activation_backward(tanh)", 3 * rows * cols * item,
         lambda: be.activation_backward("tanh", dy, None, y, out=out),
         lambda: generic.activation_backward(be, "tanh", dy, None, y, out=out)),
        ("column_sum", rows * cols * item,
         lambda: be.column_sum(dy, out=db),
         lambda: generic.column_sum(be, dy, out=db)),
        ("sigmoid_binary_cross_entropy", 3 * rows * cols * item,
         lambda: be.sigmoid_binary_cross_entropy(z, targets, grad_out=out),
         lambda: generic.sigmoid_binary_cross_entropy(be, z, targets, grad_out=out)),
        ("softmax_cross_entropy", 2 * rows * 10 * item,
         lambda: be.softmax_cross_entropy(logits, labels),
         lambda: generic.softmax_cross_entropy(be, logits, labels)),
    ]


def kernel_rows(backend, n_params=1_862_730, rows=256, cols=1024, dtype="float32", repeats=5):
    """One dict per op: fused and unfused seconds and GB/s (bytes a single pass must
    move divided by time)."""
    out = []
    for name, nbytes, fused, unfused in _cases(backend, n_params, rows, cols, dtype):
        t_fused, _ = measure(fused, sync=backend.synchronize, warmup=2, repeats=repeats,
                             min_time=0.02)
        t_unfused, _ = measure(unfused, sync=backend.synchronize, warmup=2, repeats=repeats,
                               min_time=0.02)
        out.append({"op": name, "bytes": nbytes, "fused_s": t_fused, "unfused_s": t_unfused,
                    "fused_GBps": nbytes / t_fused / 1e9,
                    "unfused_GBps": nbytes / t_unfused / 1e9,
                    "speedup": t_unfused / t_fused})
    return out
