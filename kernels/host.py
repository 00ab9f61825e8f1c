"""Running the kernels on the CPU: the compile unit built as a host shared library by the
system C++ compiler, called through ctypes. ``host_shim.h`` runs a launch's blocks one
after another and each block as its ``blockDim`` threads, one fiber each, switching at
``__syncthreads``: the grid-stride loops, the shared-memory reductions of a block and
the per-block partial sums behave as on a GPU with the same launch.

Each launch runs the threads of every block in several orders between barriers (by
default forward, reverse and a seeded shuffle), from the same inputs, and requires the
same bytes from each: a kernel that depends on the order (a missing barrier, a read of
another thread's write without one) raises ``ThreadOrderError``.

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

ORDERS = ("forward", "reverse", "shuffle")  # host_shim.h's DNN_ORDER_* codes, in order

_SCALARS = {"int64": ctypes.c_longlong, "uint64": ctypes.c_ulonglong, "int32": ctypes.c_int,
            "float32": ctypes.c_float, "float64": ctypes.c_double}


def compiler():
    """Path of a C++ compiler, or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class ThreadOrderError(AssertionError):
    """A launch gave different results for different orders of its threads."""


class HostLaunchError(RuntimeError):
    """The host build refused a launch (e.g. a block whose threads diverge at a barrier)."""


@functools.lru_cache(maxsize=None)
def _build(unit, defines=()):
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++, c++ or clang++) to build the host kernels")
    digest = hashlib.sha256((unit + repr(defines)).encode()).hexdigest()[:16]
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
               *(f"-D{d}" for d in defines), src, "-o", tmp]
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
    def __init__(self, name, function, converters, params):
        self.name = name
        self.params = params
        self.function = function
        self.converters = converters


class HostRuntime:
    """The kernels of ``source`` (default: the installed ``dnn_kernels.cu``) on the host,
    built for blocks of ``threads`` (the launchers launch that many); every launch runs
    in each of ``orders`` (names from ``ORDERS``) and compares. ``seed`` drives the
    shuffles. ``defines``: extra preprocessor names for the build (``DNN_HOST_UCONTEXT``
    selects the portable context switch)."""

    def __init__(self, source=None, threads=catalogue.THREADS, orders=ORDERS, seed=0,
                 defines=()):
        unknown = [o for o in orders if o not in ORDERS]
        if unknown or not orders:
            raise ValueError(f"orders: expected names from {', '.join(ORDERS)}; got "
                             f"{orders!r}")
        self.threads = int(threads)
        self.orders = tuple(orders)
        self.seed = int(seed)
        self.library = _build(catalogue.compile_unit(source, host=True, threads=self.threads),
                              tuple(defines))
        self._configure = self.library.dnn_host_configure
        self._configure.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_int,
                                    ctypes.c_ulonglong]
        self._configure.restype = None
        self._error = self.library.dnn_host_error
        self._error.restype = ctypes.c_char_p
        self.launches = 0

    def entry(self, kernel, dtype, activation):
        name = kernel.entry_name(dtype, activation)
        function = getattr(self.library, name)
        function.restype = None
        converters = tuple(_array_converter(dt) if kind == "array" else _scalar_converter(dt)
                           for kind, dt in kernel.signature(dtype))
        return HostEntry(name, function, converters, [p.name for p in kernel.params])

    def launch(self, entry, config, args):
        """Run the ``(blocks, threads)`` grid once per order, each time from the same
        contents of the array arguments, and require the same results."""
        if len(args) != len(entry.converters):
            raise TypeError(f"expected {len(entry.converters)} arguments; got {len(args)}")
        converted = [c(a) for c, a in zip(entry.converters, args)]
        self.launches += 1
        if len(self.orders) == 1:
            return self._run(entry, config, self.orders[0], converted)
        named = [(p, a) for p, a in zip(entry.params, args) if isinstance(a, numpy.ndarray)]
        arrays = [a for _, a in named]
        before = [a.copy() for a in arrays]
        first = None
        for order in self.orders:
            if first is not None:
                for array, saved in zip(arrays, before):
                    array[...] = saved
            self._run(entry, config, order, converted)
            results = [a.reshape(-1).view(numpy.uint8).copy() for a in arrays]
            if first is None:
                first = results
            else:
                _compare(entry.name, config, (self.orders[0], order),
                         [p for p, _ in named], first, results)

    def _run(self, entry, config, order, converted):
        blocks, threads = config
        self._configure(blocks, threads, ORDERS.index(order), self.seed + self.launches)
        entry.function(*converted)
        error = self._error()
        if error:
            raise HostLaunchError(error.decode())


def _compare(name, config, orders, params, first, results):
    for param, want, got in zip(params, first, results):
        if not numpy.array_equal(want, got):
            byte = int(numpy.flatnonzero(want != got)[0])
            raise ThreadOrderError(
                f"{name} at {config[0]} blocks of {config[1]} threads: {param} differs "
                f"between the {orders[0]} and the {orders[1]} order of the threads (first "
                f"at byte {byte}): the kernel depends on the order in which the threads of "
                f"a block run between barriers")
