"""CuPy backend: the NVIDIA GPU path.

Importable with neither CuPy nor a GPU: whether it can run is decided lazily by
``cupy_unavailable_reason()``.
"""
from __future__ import annotations

import functools

import numpy

from .base import Backend

INSTALL_HINT = "pip install '.[cuda12]' (CUDA 12) or pip install '.[cuda13]' (CUDA 13)"


@functools.lru_cache(maxsize=None)
def _import_cupy():
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return None, f"CuPy is not installed or failed to import ({exc}); {INSTALL_HINT}"
    return cupy, None


@functools.lru_cache(maxsize=None)
def cupy_unavailable_reason():
    """None when CuPy imports and sees a CUDA device, else a sentence saying why not."""
    cupy, why = _import_cupy()
    if cupy is None:
        return why
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"CuPy is installed but no CUDA device is visible ({exc})"
    if count == 0:
        return "CuPy is installed but no CUDA device is visible (device count 0)"
    return None


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self, device=0):
        super().__init__()
        why = cupy_unavailable_reason()
        if why is not None:
            raise RuntimeError(f"backend 'cupy': {why}")
        cupy, _ = _import_cupy()
        count = cupy.cuda.runtime.getDeviceCount()
        if not 0 <= int(device) < count:
            raise ValueError(f"backend 'cupy': expected a device index in [0, {count}); "
                             f"got {device!r}")
        self.xp = cupy
        self.device_id = int(device)
        self.device = f"cuda:{self.device_id}"
        self._device = cupy.cuda.Device(self.device_id)

    def asarray(self, x, dtype=None):
        with self._device:
            return self.xp.ascontiguousarray(self.xp.asarray(x, dtype=dtype))

    def to_numpy(self, x):
        return self.xp.asnumpy(x) if isinstance(x, self.xp.ndarray) else numpy.asarray(x)

    def synchronize(self):
        self._device.synchronize()

    def describe(self):
        cupy = self.xp
        props = cupy.cuda.runtime.getDeviceProperties(self.device_id)
        free, total = cupy.cuda.runtime.memGetInfo()
        return {
            "backend": self.name, "device": self.device,
            "name": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
            "memory_total_bytes": int(total), "memory_free_bytes": int(free),
            "cupy": cupy.__version__, "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        }
