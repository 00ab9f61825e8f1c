"""Data at the API boundary: what ``fit``, ``evaluate`` and ``predict`` accept, checked
once, and handed to the training loop as arrays on the model's device.

Host data is validated here (shape, finite values, the loss's target layout); this
backend's own device arrays are read back once for validation, at the call's entry,
never inside a step; an array from another library or device is an error naming both.
"""
from __future__ import annotations

import numpy

from . import backend_scope
from .validation import check_features, check_targets


def host_view(backend, data, name):
    backend = backend or backend_scope.get_backend()
    backend.check_array(data, name)
    if backend.is_native(data) and not isinstance(data, numpy.ndarray):
        return backend.to_numpy(data)
    return data


def features(model, x, name="x"):
    """``x`` as a validated 2-D host array of the model's input width (building the
    model from it if needed), in the weight dtype."""
    x = check_features(host_view(model.backend, x, name), name, model.input_dim)
    if not model.built:
        model.build(x.shape[1])
    return x.astype(model.dtype, copy=False)


def features_and_targets(model, x, y, name="x"):
    """``(x, y)`` validated host arrays; targets in the layout the loss expects."""
    x = features(model, x, name)
    y = check_targets(host_view(model.backend, y, "y"), x.shape[0], "y")
    y = model.loss.prepare_targets(y, model.output_dim)
    if y.dtype.kind == "f" or model.loss.name != "sparse_categorical_crossentropy":
        y = y.astype(model.dtype, copy=False)
    return x, y


def to_device(model, x, y=None):
    """Host arrays onto the model's device: features in the compute dtype."""
    be = model.backend
    x_dev = be.asarray(x, dtype=model.compute_dtype)
    return x_dev if y is None else (x_dev, be.asarray(y))


def split_validation(model, x, y, validation_split, validation_data):
    """``(x, y, validation or None)`` after ``validation_data`` or ``validation_split``
    (as Keras: the last fraction of the data, before any shuffling)."""
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data: expected a tuple (x_val, y_val); got "
                             f"{type(validation_data).__name__}")
        return x, y, features_and_targets(model, *validation_data, name="validation_data")
    if not validation_split:
        return x, y, None
    split = int(round(x.shape[0] * (1 - validation_split)))
    if split <= 0 or split >= x.shape[0]:
        raise ValueError(f"validation_split: {validation_split} leaves an empty "
                         f"training or validation set for {x.shape[0]} samples")
    return x[:split], y[:split], (x[split:], y[split:])
