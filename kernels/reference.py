"""NumPy references for every fused kernel, in float64-friendly, allocation-happy
form: the definitions that the CPU (numba) and CUDA kernels are tested against.

Each returns new arrays and never updates its inputs.
"""
from __future__ import annotations

import math

import numpy

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715


def activation(name, x, alpha=0.01):
    if name == "linear":
        return x.copy()
    if name == "relu":
        return numpy.maximum(x, 0)
    if name == "leaky_relu":
        return numpy.where(x > 0, x, alpha * x)
    if name == "sigmoid":
        e = numpy.exp(-numpy.abs(x))
        return numpy.where(x >= 0, 1 / (1 + e), e / (1 + e))
    if name == "tanh":
        return numpy.tanh(x)
    if name == "gelu":
        return 0.5 * x * (1 + numpy.tanh(SQRT_2_OVER_PI * (x + GELU_C * x ** 3)))
    if name == "softmax":
        e = numpy.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise ValueError(f"activation: unknown {name!r}")


def activation_backward(name, dy, x, y, alpha=0.01):
    """dL/dx given dL/dy, the input x and the output y."""
    if name == "linear":
        return dy.copy()
    if name == "relu":
        return dy * (y > 0)
    if name == "leaky_relu":
        return dy * numpy.where(y > 0, 1.0, alpha)
    if name == "sigmoid":
        return dy * y * (1 - y)
    if name == "tanh":
        return dy * (1 - y * y)
    if name == "gelu":
        t = numpy.tanh(SQRT_2_OVER_PI * (x + GELU_C * x ** 3))
        dt = SQRT_2_OVER_PI * (1 + 3 * GELU_C * x * x)
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dt)
    if name == "softmax":
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    raise ValueError(f"activation: unknown {name!r}")


def bias_activation(name, x, bias):
    return activation(name, x + bias)


def column_sum(x):
    return x.sum(axis=0)


def softmax_cross_entropy(logits, labels):
    """(mean loss, grad) for integer labels (n,) or probability rows (n, k)."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - numpy.log(numpy.exp(z).sum(axis=1, keepdims=True))
    n = logits.shape[0]
    target = numpy.eye(logits.shape[1])[labels] if labels.ndim == 1 else labels
    loss = -(target * log_p).sum() / n
    grad = (numpy.exp(log_p) * target.sum(axis=1, keepdims=True) - target) / n
    return loss, grad


def sigmoid_binary_cross_entropy(logits, targets):
    loss = (numpy.maximum(logits, 0) - logits * targets
            + numpy.log1p(numpy.exp(-numpy.abs(logits)))).mean()
    return loss, (activation("sigmoid", logits) - targets) / logits.size


def sgd(p, g, velocity, lr, momentum, nesterov, weight_decay):
    """Returns (new p, new velocity)."""
    g = g + weight_decay * p
    if momentum:
        velocity = momentum * velocity + g
        g = g + momentum * velocity if nesterov else velocity
    return p - lr * g, velocity


def adam(p, g, m, v, t, lr, beta_1, beta_2, epsilon, weight_decay=0.0, decoupled=False):
    """Step ``t`` (1-based) of Adam/AdamW. Returns (new p, new m, new v)."""
    if weight_decay and not decoupled:
        g = g + weight_decay * p
    m = m + (1 - beta_1) * (g - m)
    v = v + (1 - beta_2) * (g * g - v)
    if weight_decay and decoupled:
        p = p * (1 - lr * weight_decay)
    alpha = lr * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
    return p - alpha * m / (numpy.sqrt(v) + epsilon), m, v


def rmsprop(p, g, sq, velocity, lr, rho, epsilon, momentum, weight_decay):
    """Returns (new p, new sq, new velocity)."""
    g = g + weight_decay * p
    sq = rho * sq + (1 - rho) * g * g
    step = g / (numpy.sqrt(sq) + epsilon)
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


def counter_uniform(n, seed, counter, dtype="float32"):
    """The uniforms in [0, 1) of the dropout kernel: 24-bit values hashed from
    (seed, counter, index), identical on every backend."""
    with numpy.errstate(over="ignore"):
        base = mix64(numpy.uint64(seed) ^ (numpy.uint64(counter) * _GOLDEN))
        h = mix64(base + numpy.arange(n, dtype=numpy.uint64) * _STRIDE)
    return (h >> numpy.uint64(40)).astype(dtype) * numpy.asarray(2.0 ** -24, dtype=dtype)


def dropout_mask(n, rate, seed, counter, dtype="float32"):
    """Inverted-dropout mask of n elements: 0 with probability rate, else 1/(1-rate).

    Computed in float64 for float64 masks and in float32 otherwise (bfloat16 masks
    are stored from float32 values, as the kernel does)."""
    compute = numpy.float64 if numpy.dtype(dtype) == numpy.float64 else numpy.float32
    keep = counter_uniform(n, seed, counter, compute) >= compute(rate)
    scale = compute(1) / (compute(1) - compute(rate))
    return (keep.astype(compute) * scale).astype(dtype)
