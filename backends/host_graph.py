"""Captured steps where there are no device graphs: a recording with a CUDA graph's rules.

``capture(backend, fn)`` runs ``fn`` once and records every backend operation it calls,
with the arrays and values it passed (that run stands for the graph's first launch, so
the first ``replay()`` after a capture does nothing). A replay runs the recording, not
``fn``: the same
operations on the same buffers with the same values, as a CUDA graph replays its
kernels. So a captured step that should have been captured again (it now reads other
buffers, or other settings) replays what it was captured with, on the CPU as on a GPU,
and a test sees the stale result.

The capture also enforces what a CUDA graph forbids inside the captured body, so that
code the GPU would reject fails on the CPU first: allocating (``empty``, ``zeros``,
``asarray``), reading the device on the host (``to_numpy``, ``to_float``,
``read_scalars``) and synchronising. Only the body's own calls count; what an operation
does inside the backend is the device's work. ``verify(fn)`` checks that ``fn`` would
still run exactly the recorded operations, and names the first that differs: a buffer
rebound between capture and replay.

Arrays an operation returns (a NumPy loss is a new 0-d array each time) are recorded as
"the result of operation i", and a replay passes the new result on, as a graph's
intermediates live at fixed addresses.

The calls are seen by replacing the backend's methods on the instance for the duration
of the capture, which costs nothing outside one. A captured body must therefore reach
the backend through the object (``backend.fill(...)``), never through a method it
looked up before the capture began; ``host_callback`` is how a step's host work (MPI on
host arrays) joins the recording.
"""
from __future__ import annotations

import inspect
import threading

import numpy

# What a captured body must not call.
FORBIDDEN = {"empty": "allocates", "zeros": "allocates", "asarray": "allocates (a copy to "
             "the device)", "from_dlpack": "allocates", "to_numpy": "reads the device on "
             "the host", "to_float": "reads the device on the host", "read_scalars":
             "reads the device on the host", "synchronize": "synchronises",
             "free_memory": "queries the device", "host_empty": "allocates",
             "host_wait": "synchronises"}
# Calls that neither compute nor break a capture: they are not recorded.
PASSTHROUGH = {"view", "is_native", "check_array", "describe", "capture", "warmup",
               "limit_threads", "time_device", "device_scope", "upload_stream"}


class CaptureError(RuntimeError):
    """A captured body did what a CUDA graph cannot hold, or a replay would not run what
    was captured."""


def operations(backend_class):
    """The public methods of a backend class that a capture records."""
    return sorted(name for name, member in inspect.getmembers(backend_class, callable)
                  if not name.startswith("_") and name not in PASSTHROUGH
                  and name not in FORBIDDEN)


class _Recording:
    """The operations of one capture: ``(name, args, kwargs)`` with arguments in the
    token form of ``_token``, and what each returned."""

    def __init__(self):
        self.calls = []
        self.results = []
        self._made = {}  # id(array returned by call i) -> (i, path)

    def add(self, name, args, kwargs, result):
        self.calls.append((name, self.token(args), self.token(kwargs)))
        self.results.append(result)
        self._note(result, len(self.calls) - 1, ())

    def _note(self, value, index, path):
        if isinstance(value, (numpy.ndarray, numpy.generic)):  # a 0-d loss may be a scalar
            self._made.setdefault(id(value), (index, path, value))
        elif isinstance(value, (tuple, list)):
            for k, item in enumerate(value):
                self._note(item, index, path + (k,))

    def token(self, value):
        """Arrays a call returned, and views into them, become ``("result", i, path,
        layout)``; other arrays are held (by address); everything else by value."""
        if isinstance(value, numpy.ndarray):
            made = self._made_from(value)
            if made is not None:
                return ("result",) + made
            return ("array", value)
        if isinstance(value, numpy.generic) and id(value) in self._made:
            index, path, _ = self._made[id(value)]
            return ("scalar", index, path)
        if isinstance(value, (tuple, list)):
            return (type(value).__name__, tuple(self.token(v) for v in value))
        if isinstance(value, dict):
            return ("dict", tuple(sorted((k, self.token(v)) for k, v in value.items())))
        return ("value", value)

    def _made_from(self, array):
        """``(call index, path, layout)`` when ``array`` is, or views, a returned array:
        the layout is its byte offset in that array, its shape and strides."""
        view = array
        while view is not None:
            found = self._made.get(id(view))
            if found is not None:
                index, path, made = found
                offset = _address(array)[0] - _address(made)[0]
                return index, path, (offset, array.shape, array.strides, array.dtype.str)
            view = view.base if isinstance(view.base, numpy.ndarray) else None
        return None


def _same(a, b):
    if a[0] != b[0]:
        return False
    if a[0] == "array":  # the same memory, as a graph's pointers are
        return _address(a[1]) == _address(b[1])
    if a[0] in ("tuple", "list"):
        return len(a[1]) == len(b[1]) and all(_same(x, y) for x, y in zip(a[1], b[1]))
    if a[0] == "dict":
        return [k for k, _ in a[1]] == [k for k, _ in b[1]] and all(
            _same(x, y) for (_, x), (_, y) in zip(a[1], b[1]))
    if a[0] == "value":
        try:
            return type(a[1]) is type(b[1]) and bool(a[1] == b[1])
        except (TypeError, ValueError):
            return a[1] is b[1]
    return a == b  # results: the same call, path and shape


def _address(array):
    """Where an array's data is and how it is laid out: two views of the same memory
    are the same buffer to a graph."""
    return (array.__array_interface__["data"][0], array.shape, array.strides,
            array.dtype.str)


class HostGraph:
    """A recorded body: ``replay()`` runs its operations again; ``verify(fn)`` checks
    that ``fn`` would run the same ones."""

    def __init__(self, backend, recording):
        self.backend = backend
        self.recording = recording
        # Recording ran the work once, where a CUDA capture runs nothing: the graph's
        # first launch, which follows every capture, is that run.
        self._launched = False

    def replay(self):
        if not self._launched:
            self._launched = True
            return
        be = self.backend
        results = []
        for name, args, kwargs in self.recording.calls:
            method = getattr(type(be), name).__get__(be)
            results.append(method(*_resolve(args, results), **_resolve(kwargs, results)))

    def verify(self, fn):
        """Run ``fn`` without computing anything, each backend call answered with what
        it returned at capture, and raise CaptureError at the first call that differs
        from the recording (another operation, or another buffer or value)."""
        expected = iter(enumerate(zip(self.recording.calls, self.recording.results)))
        check = _Recording()

        def answer(name, args, kwargs):
            index, ((want, want_args, want_kwargs), result) = next(expected, (None, (
                (None, None, None), None)))
            if index is None:
                raise CaptureError(f"replay: the step now calls {name} after the "
                                   f"{len(self.recording.calls)} operations captured")
            got_args, got_kwargs = check.token(args), check.token(kwargs)
            if want != name or not _same(want_args, got_args) or \
                    not _same(want_kwargs, got_kwargs):
                raise CaptureError(
                    f"replay: operation {index} was {want}{_shown(want_args)} at capture; "
                    f"the step now calls {name}{_shown(got_args)}: a buffer or setting "
                    f"was rebound after capture, and a graph would replay the old one")
            check.add(name, args, kwargs, result)
            return result

        _intercepted(self.backend, fn, answer)
        left = next(expected, None)
        if left is not None:
            raise CaptureError(f"replay: the step now stops before operation {left[0]} "
                               f"({left[1][0][0]}) of the {len(self.recording.calls)} "
                               f"captured")


def _shown(args):
    parts = []
    for kind, *rest in args[1]:
        if kind == "array":
            parts.append(f"<array {rest[0].shape} {rest[0].dtype} at "
                         f"{_address(rest[0])[0]:#x}>")
        elif kind == "result":
            parts.append(f"<result of operation {rest[0]}>")
        elif kind == "value":
            parts.append(repr(rest[0]))
        else:
            parts.append("...")
    return "(" + ", ".join(parts) + ")"


def _resolve(token, results):
    kind = token[0]
    if kind == "array":
        return token[1]
    if kind == "value":
        return token[1]
    if kind == "scalar":
        value = results[token[1]]
        for k in token[2]:
            value = value[k]
        return value
    if kind == "result":
        _, index, path, (offset, shape, strides, dtype) = token
        value = results[index]
        for k in path:
            value = value[k]
        if offset == 0 and value.shape == shape and value.strides == strides:
            return value
        return numpy.lib.stride_tricks.as_strided(
            value.reshape(-1).view(dtype)[offset // numpy.dtype(dtype).itemsize:],
            shape, strides)
    if kind == "dict":
        return {k: _resolve(v, results) for k, v in token[1]}
    items = [_resolve(v, results) for v in token[1]]
    return tuple(items) if kind == "tuple" else items


def capture(backend, fn):
    """Run ``fn`` once, recording its backend operations under a CUDA graph's rules;
    returns the ``HostGraph``."""
    recording = _Recording()

    def run(name, args, kwargs):
        method = getattr(type(backend), name).__get__(backend)
        result = method(*args, **kwargs)
        recording.add(name, args, kwargs, result)
        return result

    _intercepted(backend, fn, run)
    return HostGraph(backend, recording)


def _intercepted(backend, fn, handle):
    """Call ``fn`` with every top-level backend call on this thread going to ``handle(name,
    args, kwargs)``, and the forbidden ones raising. Calls the backend makes inside an
    operation, and calls from other threads (a data loader's), pass straight through."""
    thread, state = threading.get_ident(), {"depth": 0}
    names = operations(type(backend))
    saved = {name: backend.__dict__[name] for name in names + list(FORBIDDEN)
             if name in backend.__dict__}

    def wrap(name, forbidden):
        bound = getattr(type(backend), name).__get__(backend)

        def call(*args, **kwargs):
            if state["depth"] or threading.get_ident() != thread:
                return bound(*args, **kwargs)
            if forbidden:
                raise CaptureError(f"a captured step calls {name}, which "
                                   f"{FORBIDDEN[name]}: a CUDA graph cannot hold that")
            state["depth"] += 1
            try:
                return handle(name, args, kwargs)
            finally:
                state["depth"] -= 1

        return call

    for name in names:
        setattr(backend, name, wrap(name, False))
    for name in FORBIDDEN:
        setattr(backend, name, wrap(name, True))
    try:
        fn()
    finally:
        for name in names + list(FORBIDDEN):
            if name in saved:
                setattr(backend, name, saved[name])
            else:
                backend.__dict__.pop(name, None)
