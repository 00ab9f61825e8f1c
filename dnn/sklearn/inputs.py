"""What a fit trains on besides X and y: the sample weights, checked and scaled, and the
early-stopping split.

Weights are scaled to a mean of 1 over the rows trained on. dnn, as Keras, divides a
batch's weighted loss by the batch's rows; with the scaling, a full-batch fit with
integer weights computes the same loss as a fit on the data with each row repeated
that many times, as scikit-learn expects of ``sample_weight``.
"""
from __future__ import annotations

import numbers

import numpy
from sklearn.model_selection import train_test_split

from dnn.training.checks import check_weights


def sample_weights(owner, sample_weight, n_samples):
    """``sample_weight`` as float64 (n_samples,), or None; a number weights every row
    alike. Raises for a wrong shape, non-finite or negative weights, or all zeros."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Real) and not isinstance(sample_weight, bool):
        weights = numpy.full(n_samples, float(sample_weight))
    else:
        try:
            weights = numpy.asarray(sample_weight, dtype=numpy.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{owner}: sample_weight: expected numbers; could not convert: "
                             f"{exc}") from None
    if weights.shape != (n_samples,):
        raise ValueError(f"{owner}: sample_weight: expected shape ({n_samples},), one weight "
                         f"per sample; got shape {weights.shape}")
    check_weights(weights, f"{owner}: sample_weight")  # finite and >= 0, as fit checks
    if not weights.any():
        raise ValueError(f"{owner}: sample_weight: expected at least one non-zero weight; "
                         f"got all {n_samples} weights zero")
    return weights


def mean_one(owner, weights):
    """``weights`` scaled to a mean of 1, or None where they are None or all equal (an
    unweighted fit computes the same loss, a step faster)."""
    if weights is None or weights.size == 0 or (weights == weights[0]).all() and weights[0]:
        return None
    total = weights.sum()
    if total <= 0:
        raise ValueError(f"{owner}: sample_weight: expected at least one non-zero weight "
                         f"among the {weights.size} rows trained on (those left after the "
                         f"early-stopping split); got all zero")
    return weights * (weights.size / total)


def validation_split(owner, n_samples, fraction, seed, stratify=None):
    """``(train rows, validation rows)``: a random split, stratified by ``stratify``
    (class indices) when given, as scikit-learn's MLP splits for early stopping."""
    rows = numpy.arange(n_samples)
    try:
        train, val = train_test_split(rows, test_size=fraction, random_state=seed,
                                      stratify=stratify)
    except ValueError as exc:
        raise ValueError(f"{owner}: early_stopping: validation_fraction={fraction} of "
                         f"{n_samples} samples leaves no usable split: {exc}") from None
    return numpy.sort(train), numpy.sort(val)
