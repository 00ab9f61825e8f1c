"""Running the kernels on a GPU: each entry point is compiled on its first launch, in a
CuPy ``RawModule`` of its own (the source with that one instantiation), so a model pays
NVRTC only for the kernels it uses: 0.06-0.36 s each (median 0.11 s, every entry at
sm_90 with the run-time options, on the 2-core CI machine), so about 4 s for the ~35
kernels of a deep float64 model, against 8 s or more for all 134 at once. CuPy keeps
each binary in its on-disk kernel cache, so this is paid once per machine. Each
launch's arguments are converted to the C types of the kernel's parsed signature, and
the launch runs with the arrays' device current (the backend's ``with device``).

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

    threads = catalogue.THREADS  # per block, as the prelude's DNN_THREADS says

    def __init__(self, cupy):
        self.cupy = cupy
        self.modules = {}  # entry-point name -> its compiled RawModule

    def entry(self, kernel, dtype, activation):
        name = kernel.entry_name(dtype, activation)
        module = self.modules.get(name)
        if module is None:
            module = self.modules[name] = self.cupy.RawModule(
                code=catalogue.compile_unit(only=(kernel.name, dtype, activation)),
                options=catalogue.NVRTC_OPTIONS)
        converters = tuple(_array if kind == "array" else numpy.dtype(dt).type
                           for kind, dt in kernel.signature(dtype))
        return CudaEntry(module.get_function(name), converters)

    def launch(self, entry, config, args):
        blocks, threads = config
        entry.function((blocks,), (threads,),
                       tuple(c(a) for c, a in zip(entry.converters, args)))
