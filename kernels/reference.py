"""The one reference for the math of every op: activations and their gradients, the
losses, the optimizer updates and the dropout mask.

Each function is written against ``xp`` (NumPy by default, or a NumPy-compatible module
such as CuPy), returns new arrays in the input's dtype and never updates its inputs.
``Backend``'s generic methods are these functions; the fused CUDA kernels, the numba
kernels and the NumPy backend's in-place passes are tested against them.

The constants here are the only definitions: the CUDA source receives them through
``catalogue.prelude()``.
"""
from __future__ import annotations

import functools
import math

import numpy

# Activations with an elementwise kernel, in the order of their codes in the CUDA source.
# "gelu" is the exact (erf) form and "gelu_tanh" its tanh approximation: Keras's gelu
# with approximate=False (its default) and approximate=True.
ELEMENTWISE_ACTIVATIONS = ("linear", "relu", "leaky_relu", "sigmoid", "tanh", "gelu",
                           "gelu_tanh")
ACTIVATIONS = ELEMENTWISE_ACTIVATIONS + ("softmax",)
# gelu's backward needs the pre-activation; every other backward works from the output.
ACTIVATIONS_NEEDING_INPUT = frozenset({"gelu", "gelu_tanh"})

GELU_K = math.sqrt(2.0 / math.pi)  # GELU's tanh approximation, as PyTorch's 'tanh'
GELU_C = 0.044715
GELU_SQRT2 = math.sqrt(2.0)  # the exact form: x (erf(x / sqrt 2) + 1) / 2, as Keras
GELU_SQRT_2PI = math.sqrt(2.0 * math.pi)  # its gradient's normal density
# Keras's defaults: keras.activations.leaky_relu (the "leaky_relu" string) and the
# keras.layers.LeakyReLU layer.
LEAKY_RELU_SLOPE = 0.2
LEAKY_RELU_LAYER_SLOPE = 0.3


def erf(x, xp=numpy):
    """The error function, elementwise. NumPy has none: SciPy's where it is installed
    (what Keras's NumPy backend calls), else the C library's through ``math.erf``;
    CuPy's own for CuPy arrays."""
    if xp is not numpy and not isinstance(x, numpy.ndarray):  # a device's array
        from cupyx.scipy.special import erf as device_erf

        return device_erf(x)
    return host_erf()(x).astype(x.dtype, copy=False)


@functools.lru_cache(maxsize=None)
def host_erf():
    """SciPy's ``erf`` ufunc, or ``libm_erf`` without SciPy."""
    try:
        from scipy.special import erf as scipy_erf
    except ImportError:
        return libm_erf
    return scipy_erf


def libm_erf(x):
    """The C library's erf of each element (``math.erf``), in float64: exact to an ulp,
    and about ten times slower than SciPy's ufunc."""
    return _LIBM_ERF(numpy.asarray(x, dtype=numpy.float64)).astype(numpy.float64)


_LIBM_ERF = numpy.frompyfunc(math.erf, 1, 1)


def activation(name, x, xp=numpy, negative_slope=LEAKY_RELU_SLOPE):
    """``name(x)``; softmax over the last axis; ``negative_slope``: leaky_relu's."""
    if name == "linear":
        return x.copy()
    if name == "relu":
        return xp.maximum(x, 0)
    if name == "leaky_relu":
        return xp.where(x > 0, x, negative_slope * x)
    if name == "sigmoid":
        return _sigmoid(x, xp.exp(-xp.abs(x)), xp)
    if name == "tanh":
        return xp.tanh(x)
    if name == "gelu":
        return x * (erf(x / _constant(GELU_SQRT2, x), xp) + 1) / 2
    if name == "gelu_tanh":
        return 0.5 * x * (1 + xp.tanh(GELU_K * (x + GELU_C * x * x * x)))
    if name == "softmax":
        e = xp.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}; got {name!r}")


def activation_backward(name, dy, x, y, xp=numpy, negative_slope=LEAKY_RELU_SLOPE):
    """dL/dx given dL/dy, the input ``x`` (read by gelu only) and the output ``y``."""
    if name == "linear":
        return dy.copy()
    if name == "relu":
        return dy * (y > 0)
    if name == "leaky_relu":  # y > 0 exactly where x > 0, the slope being >= 0
        return xp.where(y > 0, dy, negative_slope * dy)
    if name == "sigmoid":
        return dy * y * (1 - y)
    if name == "tanh":
        return dy * (1 - y * y)
    if name == "gelu":  # the normal CDF plus x times its density
        cdf = (erf(x / _constant(GELU_SQRT2, x), xp) + 1) / 2
        return dy * (cdf + x * xp.exp(-x * x / 2) / _constant(GELU_SQRT_2PI, x))
    if name == "gelu_tanh":
        t = xp.tanh(GELU_K * (x + GELU_C * x * x * x))
        dt = GELU_K * (1 + 3 * GELU_C * x * x)
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dt)
    if name == "softmax":
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}; got {name!r}")


def _constant(value, like):
    """``value`` as a scalar of ``like``'s float dtype: Keras rounds sqrt(2) to the
    input's dtype, and so do the kernels."""
    return like.dtype.type(value) if like.dtype.kind == "f" else value


def _sigmoid(x, e, xp):
    """sigmoid(x) from e = exp(-|x|): exp of a non-positive number only, so nothing
    overflows and tiny probabilities keep their relative precision."""
    return xp.where(x >= 0, 1, e) / (1 + e)


def bias_activation(name, x, bias, xp=numpy, negative_slope=LEAKY_RELU_SLOPE):
    return activation(name, x + bias, xp, negative_slope)


NORMALIZATION_EPSILON = 1e-7  # Keras' backend epsilon: Normalization's floor on the scale
AUC_EPSILON = 1e-7  # the outer AUC thresholds are -eps and 1 + eps (Keras)


def _affine(xhat, gamma, beta):
    """``gamma * xhat + beta``, either of them absent (None: Keras' scale=False and
    center=False)."""
    y = xhat if gamma is None else gamma * xhat
    return y if beta is None else y + beta


def batch_norm(x, gamma, beta, epsilon, xp=numpy):
    """Batch normalization with the batch's statistics (biased variance, as Keras):
    ``(y, xhat, mean, var)``, statistics per column; gamma, beta may be None."""
    mean = x.mean(axis=0)
    var = ((x - mean) ** 2).mean(axis=0)
    xhat = (x - mean) / xp.sqrt(var + epsilon)
    return _affine(xhat, gamma, beta), xhat, mean, var


def batch_norm_inference(x, gamma, beta, mean, var, epsilon, xp=numpy):
    """Batch normalization with fixed (moving) statistics."""
    centred = x - mean if gamma is None else gamma * (x - mean)
    scaled = centred / xp.sqrt(var + epsilon)
    return scaled if beta is None else scaled + beta


def batch_norm_backward(dy, xhat, gamma, var, epsilon, xp=numpy, batch=True):
    """``(dx, dgamma, dbeta)`` of ``batch_norm``: through the batch statistics when
    ``batch``, else of the affine map with fixed statistics ``var``."""
    n = dy.shape[0]
    dbeta = dy.sum(axis=0)
    dgamma = (dy * xhat).sum(axis=0)
    scale = (1 if gamma is None else gamma) / xp.sqrt(var + epsilon)
    dx = scale / n * (n * dy - dbeta - xhat * dgamma) if batch else scale * dy
    return dx, dgamma, dbeta


def moving_average(moving, value, momentum):
    return moving * momentum + value * (1 - momentum)


def layer_norm(x, gamma, beta, epsilon, xp=numpy):
    """Normalization of each row over its features: ``(y, xhat, rstd)``, rstd per row;
    gamma, beta may be None."""
    mean = x.mean(axis=1, keepdims=True)
    rstd = 1 / xp.sqrt(((x - mean) ** 2).mean(axis=1, keepdims=True) + epsilon)
    xhat = (x - mean) * rstd
    return _affine(xhat, gamma, beta), xhat, rstd[:, 0]


def layer_norm_backward(dy, xhat, gamma, rstd, xp=numpy):
    """``(dx, dgamma, dbeta)`` of ``layer_norm``."""
    g = dy if gamma is None else dy * gamma
    k = dy.shape[1]
    dx = rstd[:, None] / k * (k * g - g.sum(axis=1, keepdims=True)
                              - xhat * (g * xhat).sum(axis=1, keepdims=True))
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def rms_scaling(x, gamma, epsilon, xp=numpy):
    """LayerNormalization(rms_scaling=True) as Keras 3 computes it: each row scaled by
    1 / sqrt(var + epsilon), var its variance about its mean, without centring, then by
    gamma (None: 1). ``(y, xhat, rstd, shift)``: xhat = x * rstd, and each row's
    mean * rstd, which the backward pass needs."""
    mean = x.mean(axis=1, keepdims=True)
    rstd = 1 / xp.sqrt(((x - mean) ** 2).mean(axis=1, keepdims=True) + epsilon)
    xhat = x * rstd
    return _affine(xhat, gamma, None), xhat, rstd[:, 0], (mean * rstd)[:, 0]


def rms_scaling_backward(dy, xhat, gamma, rstd, shift, xp=numpy):
    """``(dx, dgamma)`` of ``rms_scaling``: dx = rstd (g - (xhat - shift) sum(g xhat) /
    k), g = dy * gamma."""
    g = dy if gamma is None else dy * gamma
    k = dy.shape[1]
    dx = rstd[:, None] / k * (k * g - (xhat - shift[:, None])
                              * (g * xhat).sum(axis=1, keepdims=True))
    return dx, (dy * xhat).sum(axis=0)


def standardize(x, mean, variance, xp=numpy):
    """Keras' Normalization layer: ``(x - mean) / max(sqrt(variance), 1e-7)``."""
    return (x - mean) / xp.maximum(xp.sqrt(variance), NORMALIZATION_EPSILON)


def standardize_backward(dy, variance, xp=numpy):
    return dy / xp.maximum(xp.sqrt(variance), NORMALIZATION_EPSILON)


def unstandardize(x, mean, variance, xp=numpy):
    """Keras' Normalization(invert=True): ``mean + x * max(sqrt(variance), 1e-7)``."""
    return mean + x * xp.maximum(xp.sqrt(variance), NORMALIZATION_EPSILON)


def unstandardize_backward(dy, variance, xp=numpy):
    return dy * xp.maximum(xp.sqrt(variance), NORMALIZATION_EPSILON)


def log_softmax(logits, xp=numpy):
    z = logits - logits.max(axis=1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))


def _row_weights(weights, like):
    """Per-row weights as a column to broadcast over ``like``'s rows (1 when None)."""
    return 1 if weights is None else weights.reshape((-1,) + (1,) * (like.ndim - 1))


def _weighted(weights, *arrays):
    """``arrays`` each times the per-row ``weights``; as they are when there are none
    (a multiply by 1 is a pass over the array: the tiny model's step felt it)."""
    if weights is None:
        return arrays
    w = _row_weights(weights, arrays[0])
    return tuple(w * a for a in arrays)


def softmax_cross_entropy(logits, labels, xp=numpy, weights=None, label_smoothing=0.0,
                          ignore_class=None):
    """``(mean loss, d loss / d logits)`` for integer labels ``(n,)`` or target rows
    ``(n, classes)`` (one-hot or probabilities: the gradient is ``p * sum(t) - t``).
    Each row is weighted by ``weights`` (n,) if given, the sum divided by n (Keras'
    "sum over batch size"); label smoothing ls makes the targets t (1 - ls) + ls / k.
    ``ignore_class`` (integer labels): rows of that label count for nothing and the sum
    is divided by the number of the others instead (Keras masks them; none left gives
    0)."""
    n, k = logits.shape
    if ignore_class is not None and labels.ndim == 1:
        valid = labels != ignore_class
        labels = xp.where(valid, labels, 0)
        mask = valid.astype(logits.dtype)
        weights = mask if weights is None else mask * weights
        n = max(int(valid.sum()), 1)  # with no valid row every weight is 0: the loss is 0
    log_p = log_softmax(logits, xp)
    target = xp.eye(k, dtype=logits.dtype)[labels] if labels.ndim == 1 \
        else labels.astype(logits.dtype, copy=False)
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / k
    w = _row_weights(weights, log_p)
    loss = -(w * target * log_p).sum() / n
    grad = w * (xp.exp(log_p) * target.sum(axis=1, keepdims=True) - target) / n
    return loss.astype(logits.dtype), grad


def sigmoid_binary_cross_entropy(logits, targets, xp=numpy, weights=None, label_smoothing=0.0):
    """``(mean loss, gradient)`` of binary cross-entropy of ``sigmoid(logits)``, each row
    weighted by ``weights``; label smoothing pulls the targets to 1/2: t (1 - ls) + ls / 2."""
    if label_smoothing:
        targets = targets * (1 - label_smoothing) + 0.5 * label_smoothing
    e = xp.exp(-xp.abs(logits))
    per = xp.maximum(logits, 0) - logits * targets + xp.log1p(e)
    per, grad = _weighted(weights, per, _sigmoid(logits, e, xp) - targets)
    grad /= logits.size  # in place: grad is a fresh array
    return per.mean().astype(logits.dtype), grad.astype(logits.dtype, copy=False)


def mean_squared_error(pred, target, xp=numpy, weights=None):
    """``(mean of (pred - target)**2 over all elements, gradient)``, rows weighted."""
    diff = pred - target
    square, grad = _weighted(weights, diff * diff, diff)
    return square.mean().astype(pred.dtype), (2.0 / pred.size) * grad


def mean_absolute_error(pred, target, xp=numpy, weights=None):
    """``(mean of |pred - target|, gradient)``, rows weighted; the gradient at 0 is 0."""
    diff, w = pred - target, _row_weights(weights, pred)
    return (w * xp.abs(diff)).mean().astype(pred.dtype), w * xp.sign(diff) / pred.size


def huber(pred, target, delta=1.0, xp=numpy, weights=None):
    """Huber loss as Keras: d^2 / 2 where |d| <= delta, else delta (|d| - delta / 2)."""
    diff, w = pred - target, _row_weights(weights, pred)
    small = xp.abs(diff) <= delta
    per = xp.where(small, 0.5 * diff * diff, delta * (xp.abs(diff) - 0.5 * delta))
    grad = w * xp.where(small, diff, delta * xp.sign(diff)) / pred.size
    return (w * per).mean().astype(pred.dtype), grad.astype(pred.dtype, copy=False)


def regularization(weights, l1, l2, xp=numpy):
    """``(penalty, gradient)`` of ``l1 * sum(|w|) + l2 * sum(w**2)`` (Keras' L1L2)."""
    penalty = l1 * xp.abs(weights).sum() + l2 * (weights * weights).sum()
    return penalty, l1 * xp.sign(weights) + 2 * l2 * weights


def _counted(condition, weights, xp):
    """The sum over ``condition``'s elements (rows by columns, or rows) of their row's
    weight: a count when ``weights`` is None."""
    if weights is None:
        return xp.sum(condition)
    w = weights.reshape((-1,) + (1,) * (condition.ndim - 1))
    return xp.sum(xp.where(condition, w, 0))


def argmax_matches(scores, labels, xp=numpy, weights=None):
    """Rows whose argmax equals ``labels``: integer ids (n,), or the argmax of target
    rows (n, k); each counted as its weight when ``weights`` (n,) are given."""
    if labels.ndim == 2:
        labels = xp.argmax(labels, axis=1)
    return _counted(xp.argmax(scores, axis=1) == labels, weights, xp)


def threshold_matches(scores, targets, threshold, xp=numpy, weights=None):
    """Elements where ``scores > threshold`` agrees with ``targets > 0.5``."""
    return _counted((scores > threshold) == (targets > 0.5), weights, xp)


def top_k_matches(scores, labels, k, xp=numpy, weights=None):
    """Rows whose label (int ids, or the argmax of target rows) is among the ``k`` highest
    scores: fewer than k scores exceed the label's (ties count as in)."""
    if labels.ndim == 2:
        labels = xp.argmax(labels, axis=1)
    own = xp.take_along_axis(scores, labels.reshape(-1, 1).astype(numpy.int64), axis=1)
    return _counted((scores > own).sum(axis=1) < k, weights, xp)


def binary_counts(scores, targets, threshold, xp=numpy, weights=None):
    """``(true positives, predicted positives, actual positives)`` at ``threshold``; a
    target is positive when it is not 0 (Keras casts the labels to bool)."""
    predicted, actual = scores > threshold, targets != 0
    return (_counted(predicted & actual, weights, xp), _counted(predicted, weights, xp),
            _counted(actual, weights, xp))


TOP_K_FILL = -1e10  # Keras' NEG_INF: what precision and recall give scores past the top k


def select_scores(scores, targets, top_k=None, class_id=None, activation_name="linear",
                  xp=numpy):
    """``(scores, targets)`` as Keras' precision and recall see them: the activation
    applied (softmax over each row, or elementwise), the scores outside each row's
    ``top_k`` highest (ties to the lower index) set to -1e10, then column ``class_id``
    alone (shape (rows, 1)) when given."""
    p = activation(activation_name, scores, xp)
    if top_k:
        order = xp.argsort(-scores, axis=1, kind="stable")  # ties: the lower index first
        rank = xp.argsort(order, axis=1)  # each score's place in that order
        p = xp.where(rank < top_k, p, TOP_K_FILL)
    if class_id is not None:
        return p[:, class_id:class_id + 1], targets[:, class_id:class_id + 1]
    return p, targets


def auc_thresholds(m):
    """Keras' AUC thresholds: -eps, then (m - 2) evenly inside (0, 1), then 1 + eps."""
    inner = [(i + 1) / (m - 1) for i in range(m - 2)]
    return numpy.array([-AUC_EPSILON] + inner + [1 + AUC_EPSILON])


def threshold_histogram(probabilities, targets, m, xp=numpy, weights=None):
    """``(positive counts, negative counts)``, each m + 1 long: how many scores (or the
    sum of their rows' weights) have b of the m AUC thresholds below them, for b = 0..m;
    a target is positive when it is not 0."""
    below = xp.searchsorted(xp.asarray(auc_thresholds(m)), probabilities.ravel(),
                            side="left")
    positive = targets.ravel() != 0
    w = None if weights is None else xp.broadcast_to(
        weights.reshape((-1,) + (1,) * (probabilities.ndim - 1)), probabilities.shape).ravel()
    return (xp.bincount(below[positive], None if w is None else w[positive], m + 1),
            xp.bincount(below[~positive], None if w is None else w[~positive], m + 1))


def auc_from_histogram(positive, negative, curve="ROC"):
    """The area under the ROC curve by the trapezoidal rule over the thresholds (Keras'
    "interpolation"), or with ``curve="PR"`` under the precision-recall curve by Keras'
    interpolation (Davis and Goadrich: precision interpolated between thresholds)."""
    tp = positive[::-1].cumsum()[::-1][1:]  # scores above threshold j: b > j
    fp = negative[::-1].cumsum()[::-1][1:]
    fn, tn = positive.sum() - tp, negative.sum() - fp
    if curve == "PR":
        return _interpolated_pr_auc(tp, fp, fn)
    tpr = _divide_no_nan(tp, tp + fn)
    fpr = _divide_no_nan(fp, fp + tn)
    return float(((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2).sum())


def _divide_no_nan(a, b):
    a, b = numpy.asarray(a, numpy.float64), numpy.asarray(b, numpy.float64)
    return numpy.divide(a, b, out=numpy.zeros(numpy.broadcast(a, b).shape), where=b != 0)


def _interpolated_pr_auc(tp, fp, fn):
    """Keras' ``AUC.interpolate_pr_auc``, from the counts at each threshold."""
    dtp = tp[:-1] - tp[1:]
    p = tp + fp
    dp = p[:-1] - p[1:]
    slope = _divide_no_nan(dtp, numpy.maximum(dp, 0))
    intercept = tp[1:] - slope * p[1:]
    both = (p[:-1] > 0) & (p[1:] > 0)
    ratio = numpy.where(both, _divide_no_nan(p[:-1], numpy.maximum(p[1:], 0)), 1.0)
    increment = _divide_no_nan(slope * (dtp + intercept * numpy.log(ratio)),
                               numpy.maximum(tp[1:] + fn[1:], 0))
    return float(increment.sum())


def abs_error(pred, target, activation_name="linear", xp=numpy, weights=None):
    """The sum of |activation(pred) - target|, each element times its row's weight."""
    error = xp.abs(activation(activation_name, pred, xp) - target)
    if weights is None:
        return xp.sum(error)
    return xp.sum(weights.reshape((-1,) + (1,) * (error.ndim - 1)) * error)


# Learning-rate schedules, encoded as float64 arrays for the device: [kind, ...].
(SCHEDULE_CONSTANT, SCHEDULE_EXPONENTIAL, SCHEDULE_PIECEWISE, SCHEDULE_COSINE,
 SCHEDULE_POLYNOMIAL, SCHEDULE_INVERSE_TIME, SCHEDULE_COSINE_RESTARTS) = range(7)


def scheduled_rate(schedule, steps_taken):
    """The learning rate after ``steps_taken`` updates, from an encoded schedule (as
    Keras 3's ExponentialDecay, PiecewiseConstantDecay, CosineDecay, PolynomialDecay,
    InverseTimeDecay and CosineDecayRestarts compute it)."""
    kind, s = int(schedule[0]), float(steps_taken)
    if kind == SCHEDULE_EXPONENTIAL:
        lr0, decay_steps, rate, staircase = schedule[1:5]
        exponent = s / decay_steps
        return lr0 * rate ** (math.floor(exponent) if staircase else exponent)
    if kind == SCHEDULE_PIECEWISE:
        n = int(schedule[1])
        boundaries, values = schedule[2:2 + n], schedule[2 + n:3 + 2 * n]
        return values[sum(1 for b in boundaries if s > b)]
    if kind == SCHEDULE_COSINE:
        lr0, steps, alpha, warmup, warmup_target, warmup_steps = schedule[1:7]
        target, warm = (warmup_target, warmup_steps) if warmup else (lr0, 0.0)
        at = min(s, steps + warm)
        if at < warm:
            return lr0 + (target - lr0) * (at / warm)
        return target * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * (at - warm) / steps))
                         + alpha)
    if kind == SCHEDULE_POLYNOMIAL:
        lr0, steps, end, power, cycle = schedule[1:6]
        if cycle:  # the first multiple of decay_steps at or above the step (1 at step 0)
            steps = steps * (1.0 if s == 0 else math.ceil(s / steps))
        else:
            s = min(s, steps)
        return (lr0 - end) * (1 - s / steps) ** power + end
    if kind == SCHEDULE_INVERSE_TIME:
        lr0, decay_steps, rate, staircase = schedule[1:5]
        p = s / decay_steps
        return lr0 / (1 + rate * (math.floor(p) if staircase else p))
    if kind == SCHEDULE_COSINE_RESTARTS:
        return _cosine_restarts(s, *schedule[1:6])
    return schedule[1]


def _cosine_restarts(s, lr0, first_steps, t_mul, m_mul, alpha):
    """SGDR: period i lasts first_steps * t_mul**i steps and starts at m_mul**i."""
    fraction = s / first_steps
    if t_mul == 1.0:
        restart = math.floor(fraction)
        fraction -= restart
    else:
        restart = math.floor(math.log(1.0 - fraction * (1.0 - t_mul)) / math.log(t_mul))
        done = (1.0 - t_mul ** restart) / (1.0 - t_mul)
        fraction = (fraction - done) / t_mul ** restart
    cosine = 0.5 * m_mul ** restart * (1.0 + math.cos(math.pi * fraction))
    return lr0 * ((1 - alpha) * cosine + alpha)


# ----------------------------------------------------------------------- optimizers
# Keras 3's optimizers. Each is its ``update_step`` (a rule: the new weights and state
# from one gradient) inside what ``BaseOptimizer.apply`` does around every rule
# (``apply``): gradient accumulation, clipping, decoupled weight decay and the weights'
# moving average. A rule takes ``(p, g, state, lr, t, xp, **hyperparameters)``, where
# ``state`` maps the optimizer's state names to arrays and ``t`` is the 1-based number
# of this update, and returns ``(new p, new state)``.
#
# Per-weight values (each weight's clip factor, its weight decay) belong to segments of
# the flat buffer, whose boundaries are multiples of SEGMENT_GROUP elements, so a table
# with one entry per group tells a kernel the segment of any element.
SEGMENT_GROUP = 16
NADAM_DECAY = 0.96  # the decay of Nadam's momentum schedule (Keras hard-codes it)


def sgd_step(p, g, state, lr, t, xp=numpy, momentum=0.0, nesterov=False):
    """Keras 3's SGD: ``b = m b - lr g; p += b`` (Nesterov: ``p += m b - lr g``), so each
    step's rate is folded into the buffer; without momentum ``p -= lr g``."""
    if not momentum:
        return p - g * lr, state
    b = state["momentum"] * momentum - g * lr
    return p + (b * momentum - g * lr if nesterov else b), {"momentum": b}


def rmsprop_step(p, g, state, lr, t, xp=numpy, rho=0.9, epsilon=1e-7, momentum=0.0):
    """Keras 3's RMSprop: ``v = rho v + (1 - rho) g^2``, ``w -= lr g / sqrt(v + eps)``
    (epsilon inside the root); centered (an ``average_gradient`` in the state) divides
    by ``sqrt(v - a^2 + eps)``; with momentum ``b = m b + lr g / sqrt(...); w -= b``.
    dnn's names: ``sq_avg`` is Keras' velocity, ``velocity`` its momentum buffer."""
    new = dict(state)
    sq = new["sq_avg"] = rho * state["sq_avg"] + (1 - rho) * (g * g)
    if "average_gradient" in state:
        a = new["average_gradient"] = rho * state["average_gradient"] + (1 - rho) * g
        denominator = sq - a * a + epsilon
    else:
        denominator = sq + epsilon
    increment = lr * g / xp.sqrt(denominator)
    if momentum:
        new["velocity"] = momentum * state["velocity"] + increment
        return p - new["velocity"], new
    return p - increment, new


def adam_step(p, g, state, lr, t, xp=numpy, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Keras 3's Adam (bias correction folded into the step size, epsilon outside the
    root); with a ``v_hat`` in the state it is AMSGrad (the root of the largest v)."""
    alpha = lr * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
    m = state["m"] + (g - state["m"]) * (1 - beta_1)
    v = state["v"] + (g * g - state["v"]) * (1 - beta_2)
    new = {"m": m, "v": v}
    if "v_hat" in state:
        v = new["v_hat"] = xp.maximum(state["v_hat"], v)
    return p - m * alpha / (xp.sqrt(v) + epsilon), new


def nadam_step(p, g, state, lr, t, xp=numpy, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Keras 3's Nadam. ``u_product`` (2,) holds the product of the momentum schedule
    u_i = beta_1 (1 - 0.5 * 0.96^i): update t reads slot (t - 1) % 2 and writes slot
    t % 2, so every element of a pass reads the same value wherever the pass is split."""
    u_t = beta_1 * (1.0 - 0.5 * NADAM_DECAY ** t)
    u_next = beta_1 * (1.0 - 0.5 * NADAM_DECAY ** (t + 1))
    u_product = state["u_product"].copy()
    product = u_product[(t - 1) % 2] * beta_1 * (1.0 - 0.5 * NADAM_DECAY ** t)
    u_product[t % 2] = product
    m = state["m"] + (g - state["m"]) * (1 - beta_1)
    v = state["v"] + (g * g - state["v"]) * (1 - beta_2)
    m_hat = u_next * m / (1 - product * u_next) + (1 - u_t) * g / (1 - product)
    v_hat = v / (1 - beta_2 ** t)
    return p - m_hat * lr / (xp.sqrt(v_hat) + epsilon), {"m": m, "v": v,
                                                          "u_product": u_product}


def adagrad_step(p, g, state, lr, t, xp=numpy, epsilon=1e-7):
    """Keras 3's Adagrad: ``acc += g^2; w -= lr g / sqrt(acc + eps)``."""
    accumulator = state["accumulator"] + g * g
    return p - lr * g / xp.sqrt(accumulator + epsilon), {"accumulator": accumulator}


def adamax_step(p, g, state, lr, t, xp=numpy, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Keras 3's Adamax: ``u = max(beta_2 u, |g|)``, ``w -= lr m / ((1 - beta_1^t)(u + eps))``."""
    m = state["m"] + (g - state["m"]) * (1 - beta_1)
    u = xp.maximum(beta_2 * state["u"], xp.abs(g))
    return p - lr * m / ((1 - beta_1 ** t) * (u + epsilon)), {"m": m, "u": u}


def lion_step(p, g, state, lr, t, xp=numpy, beta_1=0.9, beta_2=0.99):
    """Keras 3's Lion: ``w -= lr sign(beta_1 m + (1 - beta_1) g)``, then
    ``m = beta_2 m + (1 - beta_2) g``."""
    m = state["momentum"]
    p = p - lr * xp.sign(m * beta_1 + g * (1.0 - beta_1))
    return p, {"momentum": m * beta_2 + g * (1.0 - beta_2)}


RULES = {"sgd": sgd_step, "rmsprop": rmsprop_step, "adam": adam_step, "nadam": nadam_step,
         "adagrad": adagrad_step, "adamax": adamax_step, "lion": lion_step}


def apply(rule, p, g, state, step, lr, xp=numpy, accumulator=None, accumulation_steps=1,
          clipvalue=None, clip_scale=None, weight_decay=0.0, ema=None, ema_momentum=0.99,
          ema_overwrite_frequency=None, **hyperparameters):
    """Call number ``step`` (1-based) of Keras 3's ``BaseOptimizer.apply`` on one flat
    buffer, with the rule named ``rule`` (see RULES). Returns ``(p, state, accumulator,
    ema)``, each new.

    With ``accumulation_steps`` k > 1, a call whose step is not a multiple of k only adds
    ``g`` to ``accumulator``; the k-th uses ``(g + accumulator) / k`` and empties it, and
    the rule sees t = step / k. Then, in Keras' order: ``clipvalue`` clamps the gradient,
    ``clip_scale`` (per element, from ``clip_scales``) scales it, and the weights decay
    (``p *= 1 - lr * weight_decay``; weight_decay may be per element). With ``ema``, the
    moving average follows the weights at every call (momentum 0 while Keras' iteration
    count, step // k before this call, is 0), and every ``ema_overwrite_frequency``
    iterations the weights take its value."""
    k = max(1, int(accumulation_steps or 1))
    done = (step - 1) // k  # Keras' optimizer.iterations before this call
    if accumulator is not None and step % k:
        accumulator = accumulator + g
    else:
        if accumulator is not None:
            g = (g + accumulator) / k
            accumulator = xp.zeros_like(accumulator)
        if clipvalue:
            g = xp.clip(g, -clipvalue, clipvalue)
        if clip_scale is not None:
            g = g * clip_scale
        if (xp.any(weight_decay) if hasattr(weight_decay, "shape") else weight_decay):
            p = p * (1 - lr * weight_decay)
        p, state = RULES[rule](p, g, state, lr, step // k, xp, **hyperparameters)
    if ema is not None:
        momentum = ema_momentum if done != 0 else 0.0
        ema = momentum * ema + (1 - momentum) * p
        if ema_overwrite_frequency and (done + 1) % ema_overwrite_frequency == 0:
            p = ema.copy()
    return p, state, accumulator, ema


def accumulated_gradient(g, accumulator, accumulation_steps, step):
    """The gradient the rule sees at ``step``: ``(g + accumulator) / k`` on an update
    step of gradient accumulation, else ``g`` (what the clip norms are measured on)."""
    k = max(1, int(accumulation_steps or 1))
    if accumulator is None or k == 1 or step % k:
        return g
    return (g + accumulator) / k


def clip_scales(g, bounds, clipnorm, per_weight, xp=numpy):
    """The factor each segment ``[bounds[s], bounds[s + 1])`` of the gradient is scaled
    by, as Keras clips: per weight (``clipnorm``) ``c / max(norm_s, c)``; for the joint
    norm (``global_clipnorm``) ``c min(1 / norm, 1 / c)`` for every segment (NaN when the
    norm is not finite, as Keras)."""
    squares = xp.add.reduceat(g * g, xp.asarray(numpy.asarray(bounds)[:-1]))
    if per_weight:
        return clipnorm / xp.maximum(xp.sqrt(squares), clipnorm)
    norm = xp.sqrt(squares.sum())
    with numpy.errstate(divide="ignore", invalid="ignore"):  # 1 / 0 is inf, as in Keras
        scale = clipnorm * xp.minimum(1.0 / norm, 1.0 / clipnorm) + (norm - norm)
    return xp.full(squares.shape, scale, dtype=g.dtype)


def segment_values(values, bounds, xp=numpy):
    """Per element: ``values[s]`` for each element of segment s."""
    return xp.repeat(values, numpy.diff(numpy.asarray(bounds)).tolist())


def sgd(p, g, momentums, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """One Keras 3 SGD update with decoupled weight decay. Returns ``(new p, new
    momentums)``; ``momentums`` may be None without momentum."""
    p, state, _, _ = apply("sgd", p, g, {"momentum": momentums}, 1, lr,
                           weight_decay=weight_decay, momentum=momentum, nesterov=nesterov)
    return p, state["momentum"]


def rmsprop(p, g, sq, velocity, lr, rho=0.9, epsilon=1e-7, momentum=0.0, weight_decay=0.0,
            xp=numpy, average=None):
    """One Keras 3 RMSprop update (``average``: the centered form's mean gradient).
    Returns ``(new p, new sq, new velocity)``."""
    state = {"sq_avg": sq, "velocity": velocity}
    if average is not None:
        state["average_gradient"] = average
    p, state, _, _ = apply("rmsprop", p, g, state, 1, lr, xp, weight_decay=weight_decay,
                           rho=rho, epsilon=epsilon, momentum=momentum)
    return p, state["sq_avg"], state["velocity"]


def adam(p, g, m, v, t, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0,
         decoupled=False, xp=numpy):
    """Step ``t`` (1-based) of Adam, Keras' formulation (epsilon added to sqrt(v), bias
    correction folded into the step size); with ``decoupled`` the weight decay is Keras
    3's (``p *= 1 - lr * weight_decay`` first); without, it is L2 added to the gradient,
    the formula of files written before Keras 3 parity (kept to resume them). Returns
    ``(new p, new m, new v)``."""
    if weight_decay and not decoupled:
        g = g + weight_decay * p
    m = m + (1 - beta_1) * (g - m)
    v = v + (1 - beta_2) * (g * g - v)
    if weight_decay and decoupled:
        p = p * (1 - lr * weight_decay)
    alpha = lr * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
    return p - alpha * m / (xp.sqrt(v) + epsilon), m, v


# The formulas of files written before Keras 3 parity (formula "legacy" in an
# optimizer's config), kept only so that such a file resumes as it trained.
def sgd_legacy(p, g, velocity, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """PyTorch's SGD (``v = m v + g; p -= lr v``) with L2 weight decay added to the
    gradient: the formula of old files only. Returns ``(new p, new velocity)``."""
    g = g + weight_decay * p
    if momentum:
        velocity = momentum * velocity + g
        g = g + momentum * velocity if nesterov else velocity
    return p - lr * g, velocity


def rmsprop_legacy(p, g, sq, velocity, lr, rho=0.9, epsilon=1e-7, momentum=0.0,
                   weight_decay=0.0, xp=numpy):
    """RMSprop with epsilon outside the root and L2 weight decay: the formula of old
    files only. Returns ``(new p, new sq, new velocity)``."""
    g = g + weight_decay * p
    sq = rho * sq + (1 - rho) * g * g
    step = g / (xp.sqrt(sq) + epsilon)
    if momentum:
        velocity = momentum * velocity + lr * step
        return p - velocity, sq, velocity
    return p - lr * step, sq, velocity


_MIX1 = numpy.uint64(0xBF58476D1CE4E5B9)
_MIX2 = numpy.uint64(0x94D049BB133111EB)
_GOLDEN = numpy.uint64(0x9E3779B97F4A7C15)
_STRIDE = numpy.uint64(0xD1B54A32D192ED03)


def mix64(z):
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic, as in C)."""
    z = numpy.asarray(z, dtype=numpy.uint64)
    z = (z ^ (z >> numpy.uint64(30))) * _MIX1
    z = (z ^ (z >> numpy.uint64(27))) * _MIX2
    return z ^ (z >> numpy.uint64(31))


def counter_uniform(n, seed, counter, dtype="float32", offset=0):
    """The uniforms in [0, 1) of the dropout kernel: 24-bit values hashed from
    (seed, counter, offset + index), identical on every backend."""
    with numpy.errstate(over="ignore"):
        base = mix64(numpy.uint64(seed) ^ (numpy.uint64(counter) * _GOLDEN))
        index = numpy.arange(offset, offset + n, dtype=numpy.uint64)
        h = mix64(base + index * _STRIDE)
    return (h >> numpy.uint64(40)).astype(dtype) * numpy.asarray(2.0 ** -24, dtype=dtype)


def dropout_mask(n, rate, seed, counter, dtype="float32", offset=0):
    """Inverted-dropout mask of n elements (host NumPy): 0 with probability rate, else
    1/(1-rate); element i is drawn as element ``offset + i`` of a longer mask.

    Computed in float64 for float64 masks and in float32 otherwise (bfloat16 masks
    are stored from float32 values, as the kernel does)."""
    compute = numpy.float64 if numpy.dtype(dtype) == numpy.float64 else numpy.float32
    keep = counter_uniform(n, seed, counter, compute, offset) >= compute(rate)
    scale = compute(1) / (compute(1) - compute(rate))
    return (keep.astype(compute) * scale).astype(dtype)
