"""Weight initializers by name, as Keras defines them.

``get(name)`` returns a function ``init(rng, shape, fan_in, fan_out) -> float64 array``
drawn from the model's seeded NumPy generator. The variance-scaling ones (He, Glorot,
LeCun) follow Keras: a truncated normal (cut at two standard deviations, its scale
corrected so the variance is the intended one) or a uniform distribution.
"""
from __future__ import annotations

import math

import numpy

# The standard deviation of a unit normal truncated to [-2, 2] (Keras' correction).
_TRUNCATED_STD = 0.87962566103423978


def _fan(mode, fan_in, fan_out):
    return {"fan_in": fan_in, "fan_avg": (fan_in + fan_out) / 2}[mode]


def _truncated_normal(rng, shape, std):
    values = rng.normal(0.0, std, shape)
    bad = abs(values) > 2 * std
    while bad.any():
        values[bad] = rng.normal(0.0, std, int(bad.sum()))
        bad = abs(values) > 2 * std
    return values


def variance_scaling(scale, mode, distribution):
    def init(rng, shape, fan_in, fan_out):
        variance = scale / max(1.0, _fan(mode, fan_in, fan_out))
        if distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, shape)
        return _truncated_normal(rng, shape, math.sqrt(variance) / _TRUNCATED_STD)
    return init


INITIALIZERS = {
    "he_normal": variance_scaling(2.0, "fan_in", "truncated_normal"),
    "he_uniform": variance_scaling(2.0, "fan_in", "uniform"),
    "glorot_normal": variance_scaling(1.0, "fan_avg", "truncated_normal"),
    "glorot_uniform": variance_scaling(1.0, "fan_avg", "uniform"),
    "lecun_normal": variance_scaling(1.0, "fan_in", "truncated_normal"),
    "lecun_uniform": variance_scaling(1.0, "fan_in", "uniform"),
    "random_normal": lambda rng, shape, fan_in, fan_out: rng.normal(0.0, 0.05, shape),
    "random_uniform": lambda rng, shape, fan_in, fan_out: rng.uniform(-0.05, 0.05, shape),
    "zeros": lambda rng, shape, fan_in, fan_out: numpy.zeros(shape),
    "ones": lambda rng, shape, fan_in, fan_out: numpy.ones(shape),
}


def check(name, owner):
    if name not in INITIALIZERS:
        raise ValueError(f"{owner}: expected one of {', '.join(INITIALIZERS)}; got {name!r}")
    return name


def get(name):
    return INITIALIZERS[name]
