"""The text of ``dnn info``: versions, backends (and why one is unavailable), devices,
BLAS and threads."""
from __future__ import annotations

import os
import platform

import numpy

from .. import backends
from ..version import __version__
from .environment import thread_settings


def blas_info():
    """``{"name", "version", "threads"}`` of the BLAS NumPy uses, best effort."""
    info = {"name": "unknown", "version": None, "threads": None}
    try:
        config = numpy.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        info["name"] = blas.get("name", "unknown")
        info["version"] = blas.get("version")
    except Exception:  # older NumPy: no dict mode
        pass
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                info.update(name=pool.get("internal_api"), version=pool.get("version"),
                            threads=pool.get("num_threads"))
                break
    except ImportError:
        pass
    return info


def info_text():
    lines = [f"dnn {__version__}",
             f"python {platform.python_version()} ({platform.machine()}, {os.cpu_count()} CPUs)",
             f"numpy {numpy.__version__}"]
    blas = blas_info()
    threads = blas["threads"] if blas["threads"] is not None else "default"
    lines.append(f"BLAS: {blas['name']} {blas['version'] or ''} threads={threads}".rstrip())
    env = ", ".join(f"{k}={v}" for k, v in thread_settings().items())
    if env:
        lines.append(f"thread settings: {env}")
    lines.append(f"CPU kernels: {_optional('numba', 'fused optimizer updates', 'numba')}")
    lines.append(f"bfloat16: {_optional('ml_dtypes', 'mixed_bfloat16 policy', 'bf16')}")
    lines.append("backends:")
    for name, why in backends.backend_status().items():
        if why is None:
            desc = backends.get_backend(name).describe()
            extra = ""
            if "memory_total_bytes" in desc:
                extra = (f" - {desc['name']}, {desc['memory_total_bytes'] / 2**30:.1f} GiB "
                         f"({desc['memory_free_bytes'] / 2**30:.1f} GiB free), cupy "
                         f"{desc['cupy']}, CUDA runtime {desc['cuda_runtime']}")
            lines.append(f"  {name}: available ({desc['device']}){extra}")
        else:
            lines.append(f"  {name}: unavailable - {why}")
    default = os.environ.get("DNN_BACKEND", "auto")
    lines.append(f"default backend: {default} -> {backends.get_backend(default).name}")
    return "\n".join(lines)


def _optional(module, what, extra):
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return (f"{module} not installed ({what} off: pip install {module}, or pip install "
                f"'.[{extra}]' in the dnn checkout)")
    try:
        version = importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return f"{module} {version} ({what})"
