"""What the command line infers from the data: the task (loss, output units and
activation) and the hidden layers when ``--layers`` is auto."""
from __future__ import annotations

import numpy

# Seed 002's network, the default on its circles (the README's first command).
SEED002_LAYERS = (4, 6, 6, 4)


CLASSIFICATION_LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy")


def infer_task(y, loss="auto"):
    """``(loss, output_units, output_activation)``: from the targets' values when
    ``loss`` is "auto", else the output that ``loss`` needs for these targets."""
    y = numpy.asarray(y)
    width = 1 if y.ndim == 1 else y.shape[1]
    if loss == "binary_crossentropy":
        return loss, width, "sigmoid"
    if loss in CLASSIFICATION_LOSSES:
        return loss, int(numpy.max(y)) + 1 if y.ndim == 1 else width, "softmax"
    if loss != "auto":
        return loss, width, "linear"
    integral = y.dtype.kind in "iub" or (y.dtype.kind == "f" and
                                         numpy.array_equal(y, numpy.round(y)))
    if y.ndim == 1 and integral:
        values = numpy.unique(y)
        if set(values.tolist()) <= {0, 1}:
            return "binary_crossentropy", 1, "sigmoid"
        if values.min() >= 0:
            return "sparse_categorical_crossentropy", int(values.max()) + 1, "softmax"
    return "mse", width, "linear"


def default_layers(n_features, n_outputs):
    """The hidden layers when ``--layers`` is not given: two layers of w units, w the
    power of two at or above 2 x (features + outputs), within [16, 256]. Seed 002's
    circles keep seed 002's 4,6,6,4 (see cmd_train)."""
    width = 16
    while width < min(256, 2 * (n_features + n_outputs)):
        width *= 2
    return [width, width]


