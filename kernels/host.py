"""Build dnn_kernels.cu as a host shared library with the system C++ compiler and call
its kernels through ctypes, as a one-thread launch (see host_shim.h).

This runs the kernels' exact arithmetic on the CPU so tests can compare it with the
NumPy references on random and extreme inputs, without a GPU.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy

from .source import HOST_SHIM_PATH, SOURCE_PATH, read_source


def compiler():
    """Path of a C++ compiler, or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@functools.lru_cache(maxsize=None)
def _build(source_digest, source):
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++, c++ or clang++) to build the host kernels")
    out_dir = os.path.join(tempfile.gettempdir(), f"dnn-host-kernels-{os.getuid()}")
    os.makedirs(out_dir, exist_ok=True)
    lib = os.path.join(out_dir, f"dnn_kernels_{source_digest}.so")
    if not os.path.exists(lib):
        src = os.path.join(out_dir, f"dnn_kernels_{source_digest}.cc")
        with open(src, "w") as f:
            f.write(source)
        tmp = lib + f".{os.getpid()}.tmp"
        # -ffp-contract=off: no fused multiply-adds, matching --fmad=false on the GPU.
        cmd = [cxx, "-std=c++14", "-O1", "-ffp-contract=off", "-shared", "-fPIC",
               "-include", str(HOST_SHIM_PATH), src, "-o", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"host build of {SOURCE_PATH.name} failed:\n{proc.stderr}")
        os.replace(tmp, lib)
    return ctypes.CDLL(lib)


def library(source=None):
    source = read_source() if source is None else source
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return _build(digest, source)


def _arg(value, ctype=None):
    if isinstance(value, numpy.ndarray):
        if not value.flags.c_contiguous:
            raise ValueError("host kernels need C-contiguous arrays")
        return ctypes.c_void_p(value.ctypes.data)
    if value is None:
        return ctypes.c_void_p(0)
    return ctype(value)


def call(name, *args, dtype="float32", lib=None):
    """Call kernel ``name`` with arrays (passed by pointer), Python ints (long long)
    and floats (as ``dtype``'s C type)."""
    lib = library() if lib is None else lib
    fn = getattr(lib, name)
    scalar = ctypes.c_float if numpy.dtype(dtype) == numpy.float32 else ctypes.c_double
    converted = []
    for a in args:
        if isinstance(a, bool):
            converted.append(ctypes.c_int(int(a)))
        elif isinstance(a, numpy.unsignedinteger):
            converted.append(ctypes.c_ulonglong(int(a)))
        elif isinstance(a, (int, numpy.integer)):
            converted.append(ctypes.c_longlong(int(a)))
        elif isinstance(a, (float, numpy.floating)):
            converted.append(scalar(float(a)))
        else:
            converted.append(_arg(a))
    fn.restype = None
    fn(*converted)
