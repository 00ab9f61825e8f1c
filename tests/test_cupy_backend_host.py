"""The CuPy backend's host code without a GPU, on a stand-in CuPy with two devices
(tests/fake_cupy.py): the backend's device is current for every launch path (our
kernels, cuBLAS, CuPy's own operations, graph capture and replay, NCCL) while the
caller has another device current; cuBLAS keeps our workspace across stream switches;
the generic fallbacks get their arguments right; an error inside a capture is the
error reported; bfloat16 is refused on a CuPy without it. tests/test_gpu.py checks the
same on a real device."""
import sys

import numpy
import pytest

import fake_cupy
from dnn.backends import Backend, NumpyBackend, collectives, cublas_ctypes, cupy_backend
from dnn.backends.cupy_backend import CupyBackend


@pytest.fixture
def fake(monkeypatch):
    """CuPy replaced by the stand-in (device 0 current), cuBLAS by a recorder."""
    fake_cupy.reset(device=0)
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", fake_cupy.cuda)
    monkeypatch.setattr(cupy_backend, "_import_cupy", lambda: (fake_cupy, None))
    monkeypatch.setattr(cupy_backend, "cupy_unavailable_reason", lambda: None)
    lib = fake_cupy.FakeCublas()
    monkeypatch.setattr(cublas_ctypes, "load_libcublas", lambda cupy: lib)
    return lib


def _public_methods(cls):
    return [n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))
            and not isinstance(getattr(cls, n), type)]


def test_every_public_method_runs_with_the_backends_device_current():
    unwrapped = [n for n in _public_methods(Backend)
                 if not getattr(getattr(CupyBackend, n), "runs_on_device", False)]
    assert not unwrapped


def _arrays(be, rng, shape=(6, 5), dtype="float32"):
    return be.asarray(rng.normal(size=shape).astype(dtype))


def test_launch_paths_run_on_the_backends_device_with_another_current(fake):
    be = CupyBackend(1)
    rng = numpy.random.default_rng(0)
    x, y = _arrays(be, rng), _arrays(be, rng)
    bias = _arrays(be, rng, (5,))
    assert x.device.id == 1 and fake_cupy.current_device() == 0
    be.bias_activation(x, bias, "relu", out=y)  # a fused kernel
    be.gemm(x, x, trans_b=True)  # cuBLAS
    be.column_sum(x)  # cuBLAS with a persistent ones vector
    half = be.asarray(rng.normal(size=(6, 5)).astype("float16"))
    be.bias_activation(half, be.asarray(numpy.zeros(5, "float16")), "tanh")  # CuPy's own
    be.softmax_cross_entropy(x, be.asarray(rng.integers(0, 5, 6)))  # labels converted
    be.dropout_mask((6, 5), 0.5, 7, 3)  # a host counter, uploaded
    be.to_numpy(x), be.free_memory(), be.describe(), be.synchronize()
    graph = be.capture(lambda: be.bias_activation(x, bias, "sigmoid", out=y))
    graph.replay()
    comm = _FakeMpiComm()
    nccl = collectives.NcclCollectives(comm, be)
    nccl.allreduce(x), nccl.broadcast(x)
    issued = {what.split()[0] for what, _, _ in fake_cupy.calls}
    assert issued >= {"kernel", "cublasSgemm_v2", "graph", "nccl"}
    assert {device for _, device, _ in fake_cupy.calls} == {1}
    assert fake_cupy.current_device() == 0  # and the caller's device is back


def test_a_launch_with_the_wrong_device_current_is_caught(fake):
    """The stand-in catches what it is there to catch."""
    be = CupyBackend(1)
    x = _arrays(be, numpy.random.default_rng(0))
    with pytest.raises(fake_cupy.WrongDevice, match="belongs to device 1 but device 0"):
        x + x
    with pytest.raises(fake_cupy.WrongDevice, match="kernel dnn_bias_act_relu_f32 belongs "
                                                    "to device 1"):
        be.kernels.bias_activation(x, be.zeros((5,)), "relu", x)


class _FakeMpiComm:
    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def bcast(self, value, root=0):
        return value


def test_cublas_keeps_our_workspace_across_stream_switches(fake):
    """cublasSetStream resets the workspace to cuBLAS's pool, where it would allocate
    during capture: every GEMM must run with ours, on the eager stream and in capture."""
    be = CupyBackend(0)
    rng = numpy.random.default_rng(1)
    a, c = _arrays(be, rng, (4, 4)), be.empty((4, 4))
    be.gemm(a, a)
    be.capture(lambda: be.gemm(a, a, out=c))
    be.gemm(a, a)
    workspace = (be._blas().workspace.data.ptr, cublas_ctypes.WORKSPACE_BYTES)
    gemms = [entry for entry in fake.log if entry[0] == "cublasSgemm_v2"]
    switches = [entry for entry in fake.log if entry[0] == "cublasSetStream_v2"]
    assert len(gemms) == 3 and len(switches) == 3  # eager, capture, eager again
    assert len({stream for _, stream, _ in gemms}) == 2
    assert all(ws == workspace for _, _, ws in gemms), gemms


def test_an_error_inside_a_capture_is_the_error_raised(fake, monkeypatch):
    """An error invalidates the capture, so ending it fails too; that second failure
    must not replace the first."""
    def invalidated(stream):
        raise RuntimeError("cudaErrorStreamCaptureInvalidated")

    monkeypatch.setattr(fake_cupy.Stream, "end_capture", invalidated)
    be = CupyBackend(0)

    def step():
        raise ValueError("the step's own error")

    with pytest.raises(ValueError, match="the step's own error") as info:
        be.capture(step)
    if hasattr(info.value, "__notes__"):
        assert "cudaErrorStreamCaptureInvalidated" in info.value.__notes__[0]
    assert not be._capturing


def test_a_generic_fallback_inside_a_capture_is_refused(fake):
    be = CupyBackend(0)
    half = be.asarray(numpy.ones((3, 4), "float16"))
    with pytest.raises(RuntimeError, match=r"bias_activation: no capture-safe kernel for "
                                           r"float16 \(3, 4\)"):
        be.capture(lambda: be.bias_activation(half, be.asarray(numpy.zeros(4, "float16")),
                                              "relu"))


def test_bfloat16_is_refused_on_a_cupy_without_it(fake, monkeypatch):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    be = CupyBackend(0)
    assert be.empty((2,), ml_dtypes.bfloat16).dtype == ml_dtypes.bfloat16  # CuPy 14
    monkeypatch.setattr(fake_cupy, "__version__", "13.6.0")
    with pytest.raises(TypeError, match=r"bfloat16 \(mixed_bfloat16\) needs CuPy >= 14 .*"
                                        r"got CuPy 13\.6\.0: pip install 'cupy-cuda12x>=14'"):
        be.zeros((2,), "bfloat16")
    with pytest.raises(TypeError, match="needs CuPy >= 14"):
        be.asarray(numpy.zeros(2, ml_dtypes.bfloat16))
    be.empty((2,), "float32")  # other dtypes are fine
    monkeypatch.setattr(fake_cupy, "__version__", "14.2.0")
    monkeypatch.setattr(numpy, "__version__", "2.0.2")
    with pytest.raises(TypeError, match=r"needs NumPy >= 2\.1\.2 .*got NumPy 2\.0\.2"):
        be.empty((2,), ml_dtypes.bfloat16)


# ------------------------------------------------------------- generic fallbacks
def _strided(rng, shape, dtype="float64"):
    """A non-contiguous array (a transposed or strided view): no fused kernel takes it,
    so the backend takes its generic path."""
    if len(shape) == 2:
        return numpy.ascontiguousarray(rng.normal(size=shape[::-1]).astype(dtype)).T
    return rng.normal(size=2 * shape[0]).astype(dtype)[::2]


def _fallback_cases(rng):
    x, t = _strided(rng, (6, 4)), (_strided(rng, (6, 4)) > 0).astype("float64")
    col, w = _strided(rng, (4,)), numpy.abs(_strided(rng, (6,)))
    labels = rng.integers(0, 4, 6)
    var = numpy.abs(col) + 0.5
    return [
        ("bias_activation", (x, col, "gelu"), {}),
        ("activation", ("tanh", x), {}),
        ("activation_backward", ("sigmoid", x, None, x), {}),
        ("layer_norm_forward", (x, col, col, 1e-3, numpy.empty((6, 4)), numpy.empty((6, 4)),
                                numpy.empty(6)), {}),
        ("standardize", (x, col, var, numpy.empty((6, 4))), {}),
        ("standardize_backward", (x, var, numpy.empty((6, 4))), {}),
        ("batch_norm_inference", (x, col, col, col, var, 1e-3, numpy.empty((6, 4))), {}),
        ("softmax_cross_entropy", (x, labels), {"weights": w, "label_smoothing": 0.1}),
        ("sigmoid_binary_cross_entropy", (x, t), {"weights": w, "label_smoothing": 0.2}),
        ("mean_squared_error", (x, t), {"weights": w}),
        ("mean_absolute_error", (x, t), {}),
        ("huber", (x, t, 0.3), {"weights": w}),
        ("add_regularization", (col, None, 0.1, 0.2, numpy.zeros(1)), {}),
        ("add_argmax_matches", (x, labels, numpy.zeros(1)), {}),
        ("add_top_k_matches", (x, labels, 2, numpy.zeros(1)), {}),
        ("add_threshold_matches", (x, t, 0.1, numpy.zeros(1)), {}),
        ("add_binary_counts", (x, t, 0.1, numpy.zeros(3)), {}),
        ("add_threshold_histogram", (x, t, 5, numpy.zeros(12)), {"activation": "sigmoid"}),
        ("add_abs_error", (x, t, numpy.zeros(1)), {"activation": "sigmoid"}),
        ("gather_rows", (x, numpy.arange(6)[::-1].copy(), numpy.array([1]),
                         numpy.empty((3, 4))), {}),
    ]


def _host(value):
    if isinstance(value, tuple):
        return tuple(_host(v) for v in value)
    return numpy.array(value.view(numpy.ndarray) if isinstance(value, numpy.ndarray)
                       else value)


def _device(be, value):
    if isinstance(value, numpy.ndarray):
        if value.flags.c_contiguous:
            return be.asarray(value)
        base = be.asarray(numpy.ascontiguousarray(value.T if value.ndim == 2 else
                                                  numpy.repeat(value, 2)))
        return base.T if value.ndim == 2 else base[::2]
    return value


@pytest.mark.parametrize("index", range(20))
def test_each_generic_fallback_gets_its_arguments(fake, index):
    """On arrays no kernel takes, each fused-or-generic operation computes what
    Backend's generic version computes on the CPU (the dispatcher passes the arguments
    through in Backend's order)."""
    op, args, kwargs = _fallback_cases(numpy.random.default_rng(index))[index]
    want = getattr(NumpyBackend(accelerate=False), op)(
        *[a.copy() if isinstance(a, numpy.ndarray) else a for a in args],
        **{k: v.copy() if isinstance(v, numpy.ndarray) else v for k, v in kwargs.items()})
    be = CupyBackend(1)
    device_args = [_device(be, a) for a in args]
    assert any(isinstance(a, fake_cupy.ndarray) and not a.flags.c_contiguous
               for a in device_args)
    got = getattr(be, op)(*device_args, **{k: _device(be, v) for k, v in kwargs.items()})
    got, want = (list(v) if isinstance(v, tuple) else [v] for v in (got, want))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        numpy.testing.assert_allclose(_host(g), numpy.asarray(w), rtol=1e-10, atol=1e-12)
    assert not any(what.startswith("kernel") for what, _, _ in fake_cupy.calls)
