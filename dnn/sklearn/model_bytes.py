"""A dnn model as bytes and back: the state a pickled estimator carries.

The bytes are the model file ``model.save`` writes (weights, config, optimizer state;
no pickled Python objects), so an estimator travels to joblib workers and back without
pickling any dnn internals. dnn has no in-memory save yet: these two functions go
through a temporary file, and are the one place to switch once it has one.
"""
from __future__ import annotations

import os
import tempfile

import dnn


def model_to_bytes(model):
    """The bytes of ``model.save``'s file for ``model`` (a built ``dnn.Sequential``)."""
    with tempfile.TemporaryDirectory(prefix="dnn-sklearn-") as directory:
        path = os.path.join(directory, "model.npz")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def model_from_bytes(data, backend=None):
    """The model that ``model_to_bytes`` gave ``data`` for, rebuilt on ``backend`` (a
    name for ``dnn.use_backend``; None: the current backend)."""
    with tempfile.TemporaryDirectory(prefix="dnn-sklearn-") as directory:
        path = os.path.join(directory, "model.npz")
        with open(path, "wb") as f:
            f.write(data)
        if backend is None:
            return dnn.load_model(path)
        with dnn.use_backend(backend):
            return dnn.load_model(path)
