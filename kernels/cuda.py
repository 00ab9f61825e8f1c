"""Runtime side of the CUDA kernels: compile ``dnn_kernels.cu`` once per device as a
CuPy ``RawModule`` (lazily, on the first launch; CuPy keeps the binary in its kernel
cache on disk) and launch kernels by name and dtype.

Importing this module needs neither CuPy nor a GPU.
"""
from __future__ import annotations

import numpy

from .source import kernel_name, read_source

THREADS = 256
SUM_THREADS = 256  # must equal SUM_THREADS in dnn_kernels.cu: sum_to_scalar runs one block
# Grid-stride loops cover the rest; more blocks than this only adds launch work.
MAX_BLOCKS = 65535
# --fmad=false keeps the arithmetic identical to the host build that the tests check.
NVRTC_OPTIONS = ("--std=c++14", "--fmad=false")


class CudaKernels:
    """The compiled kernel module of one device."""

    def __init__(self, cupy):
        self.cupy = cupy
        self._module = None
        self._functions = {}

    def module(self):
        if self._module is None:
            self._module = self.cupy.RawModule(code=read_source(), options=NVRTC_OPTIONS)
        return self._module

    def function(self, base, dtype=None):
        name = base if dtype is None else kernel_name(base, numpy.dtype(dtype).name)
        fn = self._functions.get(name)
        if fn is None:
            fn = self._functions[name] = self.module().get_function(name)
        return fn

    def launch(self, base, dtype, n, args):
        """Launch ``base`` for ``dtype`` (None for untyped kernels) over ``n`` work
        items (grid-stride)."""
        blocks = max(1, min(MAX_BLOCKS, -(-int(n) // THREADS)))
        self.function(base, dtype)((blocks,), (THREADS,), args)

    def launch_single(self, base, dtype, args):
        """Launch a bookkeeping kernel that one thread runs."""
        self.function(base, dtype)((1,), (1,), args)
