"""A dnn model as bytes and back: the state a pickled estimator carries.

The bytes are the model file ``model.save`` writes (weights, config, optimizer state;
no pickled Python objects), written to and read from memory, so an estimator travels to
joblib workers and back without pickling any dnn internals.
"""
from __future__ import annotations

import io

import dnn


def model_to_bytes(model):
    """The bytes of ``model.save``'s file for ``model`` (a built ``dnn.Sequential``)."""
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getvalue()


def model_from_bytes(data, backend=None):
    """The model that ``model_to_bytes`` gave ``data`` for, rebuilt on ``backend`` (a
    name for ``dnn.use_backend``; None: the current backend)."""
    if backend is None:
        return dnn.load_model(io.BytesIO(data))
    with dnn.use_backend(backend):
        return dnn.load_model(io.BytesIO(data))
