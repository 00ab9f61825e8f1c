"""Which backend dnn computes on: chosen by object and scope, never at import time.

Precedence: the innermost ``with use_backend(...)``, else ``set_backend(...)``, else the
environment variable ``DNN_BACKEND``, else "auto" (CuPy when a GPU is usable).
The name is resolved when a model is built, so importing dnn touches no device.
"""
from __future__ import annotations

import contextlib
import contextvars
import os

from . import backends

_scoped = contextvars.ContextVar("dnn_backend", default=None)
_global = None


def set_backend(name):
    """Set the process-wide default backend ("numpy", "cupy", "cupy:N", "auto" or a
    Backend). Returns the Backend instance."""
    global _global
    backend = backends.get_backend(name)
    _global = backend
    return backend


@contextlib.contextmanager
def use_backend(name):
    """``with dnn.use_backend("numpy"):`` builds models inside on that backend."""
    token = _scoped.set(backends.get_backend(name))
    try:
        yield _scoped.get()
    finally:
        _scoped.reset(token)


def get_backend():
    """The backend a model built now would use."""
    scoped = _scoped.get()
    if scoped is not None:
        return scoped
    if _global is not None:
        return _global
    return backends.get_backend(os.environ.get("DNN_BACKEND", "auto") or "auto")
