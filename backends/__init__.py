"""Array backends for dnn: one interface (``Backend``), one implementation per library.

``get_backend("numpy")``, ``get_backend("cupy")`` or ``get_backend("cupy:1")`` return a
shared instance; ``"auto"`` means CuPy when a GPU is usable and NumPy otherwise.
Nothing here imports CuPy until a CuPy backend is asked for.
"""
from __future__ import annotations

from .base import ACTIVATIONS, ACTIVATIONS_NEEDING_INPUT, Backend, check_activation
from .numpy_backend import NumpyBackend

__all__ = [
    "ACTIVATIONS", "ACTIVATIONS_NEEDING_INPUT", "Backend", "BackendUnavailable", "NumpyBackend",
    "available_backends", "backend_status", "check_activation", "get_backend",
    "register_backend",
]


class BackendUnavailable(RuntimeError):
    """The backend exists but cannot run here (library missing, no device)."""


def _numpy_factory(device):
    if device is not None:
        raise ValueError(f"backend 'numpy': expected no device index; got {device!r}")
    return NumpyBackend()


def _cupy_factory(device):
    from .cupy_backend import CupyBackend

    return CupyBackend(0 if device is None else device)


def _no_cuda_driver():
    """Why CuPy cannot see a GPU, found without importing CuPy (its import alone takes
    about a second, which every CLI start with "auto" would pay on a machine without a
    GPU): on Linux, no CUDA driver library to load. None when there is one, or when
    this cannot tell (CuPy then decides)."""
    import ctypes
    import importlib.util
    import sys

    try:
        installed = importlib.util.find_spec("cupy") is not None
    except (ImportError, ValueError):  # a cupy entry in sys.modules that is not a module
        return None
    if not installed or not sys.platform.startswith("linux"):
        return None
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "CuPy is installed but no CUDA device is visible (no CUDA driver: " \
            "libcuda.so.1 cannot be loaded)"
    return None


def _cupy_status():
    why = _no_cuda_driver()
    if why is not None:
        return why
    from .cupy_backend import cupy_unavailable_reason

    return cupy_unavailable_reason()


_FACTORIES = {"numpy": (_numpy_factory, lambda: None), "cupy": (_cupy_factory, _cupy_status)}
_INSTANCES: dict = {}


def register_backend(name, factory, unavailable_reason=lambda: None):
    """Register ``factory(device_or_None) -> Backend`` under ``name``.

    ``unavailable_reason()`` returns None when usable, else a sentence saying why not.
    """
    _FACTORIES[name] = (factory, unavailable_reason)
    _INSTANCES.pop(name, None)


def _parse(name):
    if isinstance(name, Backend):
        return name, None
    if not isinstance(name, str):
        raise TypeError(f"backend: expected a name such as 'numpy', 'cupy' or 'cupy:1'; "
                        f"got {type(name).__name__}")
    base, _, dev = name.strip().lower().partition(":")
    if base not in _FACTORIES and base != "auto":
        valid = ", ".join(["auto", *_FACTORIES])
        raise ValueError(f"backend: expected one of {valid}; got {name!r}")
    if dev:
        if not dev.isdigit():
            raise ValueError(f"backend: expected a device index after ':' (e.g. 'cupy:0'); "
                             f"got {name!r}")
        return base, int(dev)
    return base, None


def backend_status():
    """``{name: None or reason}``: None where usable, else why not."""
    out = {}
    for name, (_, reason) in _FACTORIES.items():
        try:
            out[name] = reason()
        except Exception as exc:  # a broken install must not hide the other backends
            out[name] = f"{type(exc).__name__}: {exc}"
    return out


def gpu_count():
    """The number of CUDA devices CuPy sees (0 when the cupy backend is unusable)."""
    if backend_status().get("cupy") is not None:
        return 0
    from .cupy_backend import _import_cupy

    cupy, _ = _import_cupy()
    return cupy.cuda.runtime.getDeviceCount()


def available_backends():
    """Names of the backends usable on this machine, NumPy first."""
    return [name for name, reason in backend_status().items() if reason is None]


def get_backend(name="auto"):
    """The shared backend instance for ``name`` ("numpy", "cupy", "cupy:N" or "auto")."""
    if isinstance(name, Backend):
        return name
    base, device = _parse(name)
    if base == "auto":
        base = "cupy" if "cupy" in available_backends() else "numpy"
    key = base if device is None else f"{base}:{device}"
    inst = _INSTANCES.get(key)
    if inst is None:
        factory, reason = _FACTORIES[base]
        why = reason()
        if why is not None:
            raise BackendUnavailable(f"backend {key!r} is not usable here: {why}")
        inst = _INSTANCES[key] = factory(device)
    return inst
