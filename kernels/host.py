"""Running the kernels on the CPU: the compile unit built as a host shared library by the
system C++ compiler, called through ctypes. With ``host_shim.h`` a block is one thread,
and a launch runs the grid's blocks one after another, so the grid-stride loops and the
per-block partial sums of a reduction behave as they do on a GPU with the same grid.

This runs each kernel's exact arithmetic without a GPU, through the same launchers
(``kernels.launch.FusedKernels``) the CuPy backend uses, so tests compare it with the
NumPy references on random and extreme inputs.
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

from . import catalogue

_SCALARS = {"int64": ctypes.c_longlong, "uint64": ctypes.c_ulonglong, "int32": ctypes.c_int,
            "float32": ctypes.c_float, "float64": ctypes.c_double}


def compiler():
    """Path of a C++ compiler, or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@functools.lru_cache(maxsize=None)
def _build(unit):
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++, c++ or clang++) to build the host kernels")
    digest = hashlib.sha256(unit.encode()).hexdigest()[:16]
    out_dir = os.path.join(tempfile.gettempdir(), f"dnn-host-kernels-{os.getuid()}")
    os.makedirs(out_dir, exist_ok=True)
    lib = os.path.join(out_dir, f"dnn_kernels_{digest}.so")
    if not os.path.exists(lib):
        src = os.path.join(out_dir, f"dnn_kernels_{digest}.{os.getpid()}.cc")
        with open(src, "w") as f:
            f.write(unit)
        tmp = lib + f".{os.getpid()}.tmp"
        # -ffp-contract=off: no fused multiply-adds, matching --fmad=false on the GPU.
        cmd = [cxx, "-std=c++14", "-O1", "-ffp-contract=off", "-shared", "-fPIC",
               "-include", str(catalogue.HOST_SHIM_PATH), src, "-o", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        os.unlink(src)
        if proc.returncode != 0:
            raise RuntimeError(f"host build of {catalogue.SOURCE_PATH.name} failed:\n"
                               f"{proc.stderr}")
        os.replace(tmp, lib)
    return ctypes.CDLL(lib)


def _array_converter(dtype_name):
    def convert(value):
        if value is None:
            return ctypes.c_void_p(0)
        if not isinstance(value, numpy.ndarray) or not value.flags.c_contiguous:
            raise TypeError(f"host kernels take C-contiguous NumPy arrays; got "
                            f"{type(value).__name__}")
        if value.dtype.name != dtype_name:
            raise TypeError(f"expected a {dtype_name} array; got {value.dtype.name}")
        return ctypes.c_void_p(value.ctypes.data)

    return convert


def _scalar_converter(dtype_name):
    ctype = _SCALARS[dtype_name]
    if dtype_name.startswith(("int", "uint")):
        return lambda value: ctype(int(value))
    return lambda value: ctype(float(value))


class HostEntry:
    def __init__(self, function, converters):
        self.function = function
        self.converters = converters


class HostRuntime:
    """The kernels of ``source`` (default: the installed ``dnn_kernels.cu``) on the host."""

    def __init__(self, source=None):
        self.library = _build(catalogue.compile_unit(source))
        self._set_grid = self.library.dnn_host_grid
        self._set_grid.argtypes = [ctypes.c_uint, ctypes.c_uint]
        self._set_grid.restype = None

    def entry(self, kernel, dtype, activation):
        function = getattr(self.library, kernel.entry_name(dtype, activation))
        function.restype = None
        converters = tuple(_array_converter(dt) if kind == "array" else _scalar_converter(dt)
                           for kind, dt in kernel.signature(dtype))
        return HostEntry(function, converters)

    def launch(self, entry, config, args):
        """Run each block of the ``(blocks, threads)`` grid in turn, as one thread."""
        if len(args) != len(entry.converters):
            raise TypeError(f"expected {len(entry.converters)} arguments; got {len(args)}")
        converted = [c(a) for c, a in zip(entry.converters, args)]
        blocks = config[0]
        for block in range(blocks):
            self._set_grid(block, blocks)
            entry.function(*converted)
