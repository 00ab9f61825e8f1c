"""Running the kernels on a GPU: the compile unit (see ``catalogue.compile_unit``) is
compiled once per device as a CuPy ``RawModule``, lazily on the first launch (CuPy keeps
the binary in its on-disk kernel cache), and each launch's arguments are converted to
the C types of the kernel's parsed signature.

Importing this module needs neither CuPy nor a GPU.
"""
from __future__ import annotations

import numpy

from . import catalogue

# A NULL pointer for an optional array argument. Not None: CuPy passes None to a
# RawKernel as 0xffffffff, not NULL (cupy/cupy#9046); a 64-bit zero scalar is NULL.
NULL = numpy.uint64(0)


def _array(value):
    return NULL if value is None else value


class CudaEntry:
    """One compiled entry point with its argument converters."""

    def __init__(self, function, converters):
        self.function = function
        self.converters = converters


class CudaRuntime:
    """The compiled kernel module of the current device."""

    def __init__(self, cupy):
        self.cupy = cupy
        self._module = None

    def module(self):
        if self._module is None:
            self._module = self.cupy.RawModule(code=catalogue.compile_unit(),
                                               options=catalogue.NVRTC_OPTIONS)
        return self._module

    def entry(self, kernel, dtype, activation):
        converters = tuple(_array if kind == "array" else numpy.dtype(dt).type
                           for kind, dt in kernel.signature(dtype))
        return CudaEntry(self.module().get_function(kernel.entry_name(dtype, activation)),
                         converters)

    def launch(self, entry, config, args):
        blocks, threads = config
        entry.function((blocks,), (threads,),
                       tuple(c(a) for c, a in zip(entry.converters, args)))
