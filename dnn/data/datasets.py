"""Synthetic datasets, generated locally from a seed (nothing is downloaded).

Each returns ``(x, y)``: ``x`` float64 of shape (n, features), ``y`` int64 labels of
shape (n,) (float64 targets for regression).
"""
from __future__ import annotations

import numpy

from ..utils.validation import (check_nonnegative_int, check_number_in,
                                check_positive_int, check_positive_number)


def _check_noise(noise):
    return check_positive_number(noise, "noise", allow_zero=True)


def _shuffled(rng, x, y):
    order = rng.permutation(x.shape[0])
    return x[order], y[order]


def make_circles(n_samples=1000, factor=0.5, noise=0.08, seed=0):
    """Two concentric circles (the circles example): label 0 on the outer circle of
    radius 1, label 1 on the inner circle of radius ``factor``; Gaussian ``noise``
    added."""
    n = check_positive_int(n_samples, "n_samples")
    check_number_in(factor, "factor", 0, 1, "()")
    noise = _check_noise(noise)
    rng = numpy.random.default_rng(check_nonnegative_int(seed, "seed"))
    n_outer = n // 2
    n_inner = n - n_outer
    t_out = numpy.linspace(0, 2 * numpy.pi, n_outer, endpoint=False)
    t_in = numpy.linspace(0, 2 * numpy.pi, n_inner, endpoint=False)
    x = numpy.concatenate([
        numpy.stack([numpy.cos(t_out), numpy.sin(t_out)], 1),
        factor * numpy.stack([numpy.cos(t_in), numpy.sin(t_in)], 1)])
    y = numpy.concatenate([numpy.zeros(n_outer), numpy.ones(n_inner)]).astype(numpy.int64)
    x += rng.normal(0.0, noise, x.shape)
    return _shuffled(rng, x, y)


def make_moons(n_samples=1000, noise=0.2, seed=0):
    """Two interleaving half circles, labels 0 and 1."""
    n = check_positive_int(n_samples, "n_samples")
    noise = _check_noise(noise)
    rng = numpy.random.default_rng(check_nonnegative_int(seed, "seed"))
    n_a = n // 2
    n_b = n - n_a
    t_a = numpy.linspace(0, numpy.pi, n_a)
    t_b = numpy.linspace(0, numpy.pi, n_b)
    x = numpy.concatenate([numpy.stack([numpy.cos(t_a), numpy.sin(t_a)], 1),
                           numpy.stack([1 - numpy.cos(t_b), 0.5 - numpy.sin(t_b)], 1)])
    y = numpy.concatenate([numpy.zeros(n_a), numpy.ones(n_b)]).astype(numpy.int64)
    x += rng.normal(0.0, noise, x.shape)
    return _shuffled(rng, x, y)


def make_xor(n_samples=400, noise=0.15, seed=0):
    """Four Gaussian clusters at (+-1, +-1); label 1 where the signs differ.

    No linear boundary gets more than 3 of the 4 clusters right (accuracy 0.75).
    """
    n = check_positive_int(n_samples, "n_samples")
    noise = _check_noise(noise)
    rng = numpy.random.default_rng(check_nonnegative_int(seed, "seed"))
    corners = numpy.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=float)
    which = numpy.arange(n) % 4
    x = corners[which] + rng.normal(0.0, noise, (n, 2))
    y = (corners[which, 0] * corners[which, 1] < 0).astype(numpy.int64)
    return _shuffled(rng, x, y)


def make_spirals(n_samples=900, n_classes=3, noise=0.2, seed=0):
    """``n_classes`` interleaved spiral arms (the CS231n spiral), labels 0..n_classes-1."""
    n = check_positive_int(n_samples, "n_samples")
    k = check_positive_int(n_classes, "n_classes")
    noise = _check_noise(noise)
    rng = numpy.random.default_rng(check_nonnegative_int(seed, "seed"))
    xs, ys = [], []
    for c in range(k):
        m = n // k + (1 if c < n % k else 0)
        r = numpy.linspace(0.05, 1.0, m)
        t = numpy.linspace(c * 4.0, (c + 1) * 4.0, m) + rng.normal(0.0, noise, m)
        xs.append(numpy.stack([r * numpy.sin(t), r * numpy.cos(t)], 1))
        ys.append(numpy.full(m, c))
    return _shuffled(rng, numpy.concatenate(xs), numpy.concatenate(ys).astype(numpy.int64))


STUDENT_FEATURES = ("lectures_attended", "homework_hours", "internet_disconnections")


def make_student(n_samples=1000, regression=False, seed=0):
    """The student example: will a student pass the course?

    Features: lectures attended (0-30), homework hours (0-120) and internet
    disconnections during lectures (0-15). The score (0-100) rises with lectures and
    homework and falls with disconnections, plus noise; pass means score >= 50.
    Returns int64 pass/fail labels, or float64 scores with ``regression=True``.
    """
    n = check_positive_int(n_samples, "n_samples")
    rng = numpy.random.default_rng(check_nonnegative_int(seed, "seed"))
    lectures = rng.integers(0, 31, n).astype(float)
    homework = rng.uniform(0, 120, n)
    disconnections = rng.poisson(4.0, n).clip(0, 15).astype(float)
    score = (20 + 1.4 * lectures + 0.45 * homework - 2.2 * disconnections
             - 0.0025 * (homework - 60) ** 2 + rng.normal(0, 5, n)).clip(0, 100)
    x = numpy.stack([lectures, homework, disconnections], 1)
    if regression:
        return x, score
    return x, (score >= 50).astype(numpy.int64)


def load_digits():
    """scikit-learn's 8x8 digits (1797 x 64, labels 0-9), which ships with
    scikit-learn; raises ImportError naming the package when it is missing."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise ImportError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from exc
    bunch = sk_load_digits()
    return bunch.data.astype(numpy.float64), bunch.target.astype(numpy.int64)
