"""A stand-in for CuPy (and for libcublas and NCCL) with two devices, to run the CuPy
backend's host code on a machine without a GPU.

It checks what CUDA leaves undefined or silently wrong when the wrong device is current:
every allocation lands on the device current at the time, and every operation on
arrays (CuPy's own, through NumPy's dispatch protocols; a kernel launch; a GEMM; a
graph launch; an NCCL call) requires the current device to be the arrays' (or the
handle's, the graph's, the communicator's). A breach raises ``WrongDevice``. Kernels,
GEMMs and collectives compute nothing: these tests are about where work runs, and
``calls`` records it. Streams can capture: a launch on a capturing stream is recorded
into the graph instead of running, as on a GPU.
"""
from __future__ import annotations

import ctypes
import types

import numpy

__version__ = "14.2.0"
DEVICES = 2


class WrongDevice(AssertionError):
    """Work was issued with a device current that is not the one it belongs to."""


_current = [0]  # the stack of current devices; the last is current
calls = []  # (what, current device) per kernel launch, GEMM, graph launch, NCCL call


def current_device():
    return _current[-1]


def reset(device=0):
    _current[:] = [device]
    calls.clear()
    _streams.clear()


def _require(device, what):
    if current_device() != device:
        raise WrongDevice(f"{what} belongs to device {device} but device {current_device()} "
                          f"is current")


def _devices(values):
    for value in values:
        if isinstance(value, ndarray):
            yield value.device.id
        elif isinstance(value, (list, tuple)):
            yield from _devices(value)


# ------------------------------------------------------------------------ arrays
class _Pointer:
    def __init__(self, array):
        self.ptr = array.ctypes.data
        self.device_id = array.device.id


class ndarray(numpy.ndarray):
    """A NumPy array that lives on ``device``, which only work on that device may touch."""

    def __array_finalize__(self, parent):
        # Views and results keep their parent's device; new arrays get the current one.
        self._fake_device = getattr(parent, "_fake_device", None) or Device(current_device())

    @property
    def device(self):
        return self._fake_device

    @property
    def data(self):
        return _Pointer(self)

    def _check(self, values, what):
        for device in _devices(values):
            _require(device, what)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        self._check(inputs + tuple(kwargs.get("out", ())), f"CuPy's {ufunc.__name__}")
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = _plain(out)
        return _result(getattr(ufunc, method)(*_plain(inputs), **kwargs), out)

    def __array_function__(self, func, types_, args, kwargs):
        self._check(tuple(args) + tuple(kwargs.values()), f"CuPy's {func.__name__}")
        return _result(func(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()}),
                       kwargs.get("out"))

    def __setitem__(self, index, value):
        self._check((self, value), "an array assignment")
        super().__setitem__(index, value)

    def fill(self, value):
        self._check((self,), "fill")
        super().fill(value)

    def copy(self, order="C"):
        self._check((self,), "copy")
        return _wrap(self.view(numpy.ndarray).copy(order))

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        self._check((self,), "astype")
        return _wrap(self.view(numpy.ndarray).astype(dtype, order, casting, copy=copy))

    def get(self, out=None):
        self._check((self,), "a copy to the host")
        if out is None:
            return numpy.array(self.view(numpy.ndarray))
        out[...] = self.view(numpy.ndarray)
        return out

    def set(self, host):
        self._check((self,), "a copy from the host")
        self.view(numpy.ndarray)[...] = host


def _plain(value):
    if isinstance(value, ndarray):
        return value.view(numpy.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _result(result, out):
    """A result written into ``out`` is ``out`` itself, as in NumPy and CuPy."""
    if isinstance(out, tuple) and len(out) == 1:
        out = out[0]
    if isinstance(out, ndarray) and isinstance(result, numpy.ndarray):
        return out
    return _wrap(result)


def _wrap(result):
    """Results of work on the current device are arrays of the current device."""
    if isinstance(result, numpy.ndarray) and not isinstance(result, ndarray):
        return result.view(ndarray)
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    return result


def _allocated(make):
    def allocate(*args, **kwargs):
        return _wrap(make(*args, **kwargs))
    return allocate


empty, zeros, ones = _allocated(numpy.empty), _allocated(numpy.zeros), _allocated(numpy.ones)
full = _allocated(numpy.full)


def asarray(x, dtype=None):
    if isinstance(x, ndarray):
        _require(x.device.id, "asarray")
        return x if dtype is None or x.dtype == dtype else x.astype(dtype)
    return _wrap(numpy.array(x, dtype=dtype))


def ascontiguousarray(x, dtype=None):
    x = asarray(x, dtype)
    return x if x.flags.c_contiguous else x.copy()


def asnumpy(x):
    return x.get() if isinstance(x, ndarray) else numpy.asarray(x)


def from_dlpack(x):
    return _wrap(numpy.from_dlpack(x))


def get_default_memory_pool():
    return types.SimpleNamespace(free_bytes=lambda: 0)


def __getattr__(name):
    """Everything else is NumPy's, run on the current device."""
    value = getattr(numpy, name)
    if callable(value) and not isinstance(value, type):
        def on_device(*args, **kwargs):
            for device in _devices(list(args) + list(kwargs.values())):
                _require(device, f"CuPy's {name}")
            return _result(value(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()}),
                           kwargs.get("out"))
        return on_device
    return value


# ----------------------------------------------------------------------- devices
class Device:
    def __init__(self, device=None):
        self.id = current_device() if device is None else int(device)
        self.pci_bus_id = f"0000:{self.id:02x}:00.0"

    def __enter__(self):
        _current.append(self.id)
        return self

    def __exit__(self, *exc):
        _current.pop()

    def synchronize(self):
        _require(self.id, "Device.synchronize")

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return self.id


_streams = {}  # device -> the stack of streams made current with "with stream"


class Stream:
    """A stream of the device current at its creation; ``ptr`` names it uniquely."""

    _count = 0

    def __init__(self, non_blocking=False, null=False):
        self.device = current_device()
        Stream._count += 1
        self.ptr = 1000 * (self.device + 1) + (0 if null else Stream._count)
        self.graph = None  # the graph being captured, if capturing

    def __enter__(self):
        _require(self.device, "making a stream current")
        _streams.setdefault(self.device, []).append(self)
        return self

    def __exit__(self, *exc):
        _streams[self.device].pop()

    def record(self, event=None):
        _require(self.device, "Stream.record")
        return Event()

    def wait_event(self, event):
        pass

    def begin_capture(self):
        _require(self.device, "begin_capture")
        self.graph = Graph(self.device)

    def end_capture(self):
        graph, self.graph = self.graph, None
        return graph


_null = {}


def get_current_stream():
    stack = _streams.get(current_device())
    if stack:
        return stack[-1]
    return _null.setdefault(current_device(), Stream(null=True))


def _issue(what, device, run, arguments=()):
    """Run ``run`` now, or record it into the current stream's graph when it captures."""
    _require(device, what)
    for other in _devices(arguments):
        _require(other, f"an array argument of {what}")
    stream = get_current_stream()
    calls.append((what, current_device(), stream.ptr))
    if stream.graph is not None:
        stream.graph.launches.append((what, run))
    else:
        run()


class Graph:
    def __init__(self, device):
        self.device = device
        self.launches = []

    def launch(self, stream):
        _require(self.device, "a graph launch")
        if stream.device != self.device:
            raise WrongDevice(f"a graph of device {self.device} launched on a stream of "
                              f"device {stream.device}")
        calls.append(("graph", current_device(), stream.ptr))
        for _, run in self.launches:
            run()


class Event:
    def record(self, stream=None):
        pass

    def synchronize(self):
        pass


# ----------------------------------------------------------------------- kernels
class RawModule:
    def __init__(self, code, options=()):
        self.code, self.options = code, options

    def get_function(self, name):
        device = current_device()  # CuPy loads the module on the current device

        def kernel(grid, block, args):
            _issue(f"kernel {name}", device, lambda: None, args)

        return kernel


# ------------------------------------------------------------ the cuda namespace
class OutOfMemoryError(MemoryError):
    pass


def _mem_get_info():
    return 1 << 30, 2 << 30


runtime = types.SimpleNamespace(
    getDeviceCount=lambda: DEVICES, memGetInfo=_mem_get_info,
    getDeviceProperties=lambda i: {"name": b"Fake GPU", "major": 9, "minor": 0},
    runtimeGetVersion=lambda: 13000, driverGetVersion=lambda: 13000)

cuda = types.SimpleNamespace(
    Device=Device, Stream=Stream, Event=Event, get_current_stream=get_current_stream,
    runtime=runtime, memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
    get_elapsed_time=lambda start, stop: 1.0,
    device=types.SimpleNamespace(get_cublas_handle=lambda: None))


# ------------------------------------------------------------------------ cuBLAS
class FakeCublas:
    """libcublas as ctypes sees it: each function records its call; a handle belongs to
    the device current at its creation and may be used only with that device current."""

    def __init__(self):
        self.log = []  # (function, handle's stream after the call, workspace) per call
        self._handles = {}  # handle value -> [device, stream, workspace]

        def function(name, body):
            def call(*args):
                status = body(*args)
                handle = self._handles.get(_value(args[0])) if args else None
                self.log.append((name,) + (tuple(handle[1:]) if handle else (None, None)))
                return status
            call.__name__ = name
            setattr(self, name, call)

        function("cublasCreate_v2", self._create)
        function("cublasSetStream_v2", self._set_stream)
        function("cublasSetWorkspace_v2", self._set_workspace)
        function("cublasSetMathMode", lambda handle, mode: self._use(handle, "math mode"))
        for gemm in ("cublasSgemm_v2", "cublasDgemm_v2", "cublasGemmEx"):
            function(gemm, lambda handle, *rest, _name=gemm: self._gemm(_name, handle))

    def _create(self, ref):
        value = 7000 + len(self._handles)
        ref._obj.value = value
        self._handles[value] = [current_device(), 0, "default pool"]
        return 0

    def _use(self, handle, what):
        device = self._handles[_value(handle)][0]
        _require(device, f"cuBLAS ({what}) with a handle of device {device}")
        return 0

    def _set_stream(self, handle, stream):
        self._use(handle, "cublasSetStream")
        # The cuBLAS docs: cublasSetStream resets the workspace to the default pool.
        self._handles[_value(handle)][1:] = [_value(stream), "default pool"]
        return 0

    def _set_workspace(self, handle, pointer, size):
        self._use(handle, "cublasSetWorkspace")
        self._handles[_value(handle)][2] = (_value(pointer), int(size))
        return 0

    def _gemm(self, name, handle):
        state = self._handles[_value(handle)]
        self._use(handle, name)
        if state[1] != get_current_stream().ptr:
            raise WrongDevice(f"{name} on stream {state[1]}, but the current stream is "
                              f"{get_current_stream().ptr}")
        _issue(name, state[0], lambda: None)
        return 0


def _value(x):
    return x.value if isinstance(x, (ctypes.c_void_p, ctypes.c_size_t)) else x


# -------------------------------------------------------------------------- NCCL
class _NcclCommunicator:
    def __init__(self, size, uid, rank):
        self.device = current_device()

    def _op(self, what, pointer, stream):
        if stream != get_current_stream().ptr or current_device() != self.device:
            raise WrongDevice(f"NCCL {what} of a communicator of device {self.device} with "
                              f"device {current_device()} current, on stream {stream} (the "
                              f"device's current stream is {get_current_stream().ptr})")
        _issue(f"nccl {what}", self.device, lambda: None)

    def allReduce(self, send, recv, count, dtype, op, stream):
        self._op("allReduce", send, stream)

    def bcast(self, pointer, count, dtype, root, stream):
        self._op("bcast", pointer, stream)


nccl = types.SimpleNamespace(
    get_unique_id=lambda: b"uid", NcclCommunicator=_NcclCommunicator, NCCL_SUM=0,
    NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_INT64=4, NCCL_INT32=2)
cuda.nccl = nccl
