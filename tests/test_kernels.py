"""The CUDA kernels without a GPU: NVRTC compiles every one for sm_80 and sm_90, a
planted error fails the check, and each kernel's arithmetic, compiled for the host
from the same source, matches its NumPy reference on random and extreme inputs."""

import numpy
import pytest
from dnn.backends import NumpyBackend
from dnn.kernels import host, reference
from dnn.kernels.source import all_kernel_names, read_source
from support import python

DTYPES = ["float32", "float64"]
SFX = {"float32": "f32", "float64": "f64"}
TOL = {"float32": dict(rtol=2e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-14)}
EXTREMES = numpy.array([0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 30.0, -30.0, 100.0, -100.0,
                        1e4, -1e4])


def _nvrtc_available():
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception:
        return False
    return True


needs_nvrtc = pytest.mark.skipif(not _nvrtc_available(),
                                 reason="CuPy/NVRTC not installed (pip install '.[test]')")
needs_cxx = pytest.mark.skipif(host.compiler() is None, reason="no C++ compiler")


# ---------------------------------------------------------------------------- NVRTC
@needs_nvrtc
def test_check_command_compiles_every_kernel():
    out = python("-m", "dnn.kernels", "--check")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"compiled {len(all_kernel_names())} kernels for sm_80, sm_90"


@needs_nvrtc
def test_planted_error_fails_the_check_with_its_line():
    from dnn.kernels.nvrtc_check import KernelCompileError, check

    source = read_source()
    marker = "        T gi = g[i] + l2 * p[i];\n"
    assert marker in source
    planted = source.replace(marker, marker + "        undeclared_thing += 1;\n", 1)
    line = planted[:planted.index("undeclared_thing")].count("\n") + 1
    with pytest.raises(KernelCompileError, match=rf"dnn_kernels\.cu\({line}\).*undeclared_thing"):
        check(source=planted, archs=("sm_90",))


@needs_nvrtc
def test_a_kernel_missing_from_the_binary_fails_the_check():
    from dnn.kernels.nvrtc_check import KernelCompileError, check

    names = all_kernel_names() + ["bias_swish_forward_f32"]
    with pytest.raises(KernelCompileError, match="bias_swish_forward_f32"):
        check(archs=("sm_80",), names=names)


# ----------------------------------------------------------------- host arithmetic
def inputs(dtype, shape, seed=0):
    """Random values with the extremes spliced in."""
    rng = numpy.random.default_rng(seed)
    x = rng.normal(0, 3, shape)
    flat = x.reshape(-1)
    k = min(flat.size, EXTREMES.size)
    flat[:k] = EXTREMES[:k]
    return numpy.ascontiguousarray(x.astype(dtype))


def close(got, want, dtype):
    assert numpy.isfinite(got).all()
    numpy.testing.assert_allclose(got, want, **TOL[dtype])


ACTS = ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "gelu"]


@needs_cxx
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_bias_activation_kernel(dtype, act):
    x = inputs(dtype, (7, 9))
    bias = inputs(dtype, (9,), seed=1) * 0.1
    y = numpy.empty_like(x)
    host.call(f"bias_{act}_forward_{SFX[dtype]}", x, bias, y, x.size, 9, 0.01, dtype=dtype)
    want = reference.activation(act, x.astype(numpy.float64) + bias)
    close(y, want, dtype)


@needs_cxx
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS[1:])
def test_activation_backward_kernel(dtype, act):
    x = inputs(dtype, (6, 8))
    y = reference.activation(act, x.astype(numpy.float64)).astype(dtype)
    dy = inputs(dtype, (6, 8), seed=2) / 10
    dx = numpy.empty_like(x)
    host.call(f"{act}_backward_{SFX[dtype]}", dy, x, y, dx, x.size, 0.01, dtype=dtype)
    want = reference.activation_backward(act, dy.astype(numpy.float64),
                                         x.astype(numpy.float64), y.astype(numpy.float64))
    close(dx, want, dtype)


@needs_cxx
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_kernels(dtype):
    x = inputs(dtype, (5, 12))
    bias = inputs(dtype, (12,), seed=3)
    y = numpy.empty_like(x)
    host.call(f"bias_softmax_forward_{SFX[dtype]}", x, bias, y, 5, 12, dtype=dtype)
    close(y, reference.activation("softmax", x.astype(numpy.float64) + bias), dtype)
    dy = inputs(dtype, (5, 12), seed=4)
    dx = numpy.empty_like(x)
    host.call(f"softmax_backward_{SFX[dtype]}", dy, y, dx, 5, 12, dtype=dtype)
    close(dx, reference.activation_backward("softmax", dy.astype(numpy.float64), None,
                                            y.astype(numpy.float64)), dtype)


@needs_cxx
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dense", [False, True])
def test_softmax_cross_entropy_kernel(dtype, dense):
    z = inputs(dtype, (9, 5))
    labels = numpy.random.default_rng(5).integers(0, 5, 9)
    grad = numpy.empty_like(z)
    row_loss = numpy.empty(9, dtype)
    if dense:
        target = numpy.eye(5, dtype=dtype)[labels]
        host.call(f"softmax_xent_dense_{SFX[dtype]}", z, target, grad, row_loss, 9, 5, 1 / 9,
                  dtype=dtype)
        want_loss, want_grad = reference.softmax_cross_entropy(z.astype(numpy.float64),
                                                               target.astype(numpy.float64))
    else:
        lab = labels.astype(numpy.int64)
        host.call(f"softmax_xent_sparse_{SFX[dtype]}", z, lab, grad, row_loss, 9, 5, 1 / 9,
                  dtype=dtype)
        want_loss, want_grad = reference.softmax_cross_entropy(z.astype(numpy.float64), lab)
    close(row_loss.sum(dtype=numpy.float64), want_loss, dtype)
    close(grad, want_grad, dtype)


@needs_cxx
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_bce_and_mse_kernels(dtype):
    z = inputs(dtype, (8, 3))
    t = numpy.random.default_rng(6).integers(0, 2, (8, 3)).astype(dtype)
    grad, parts = numpy.empty_like(z), numpy.empty_like(z)
    host.call(f"sigmoid_bce_{SFX[dtype]}", z, t, grad, parts, z.size, 1 / z.size, dtype=dtype)
    want_loss, want_grad = reference.sigmoid_binary_cross_entropy(z.astype(numpy.float64), t)
    close(parts.sum(dtype=numpy.float64), want_loss, dtype)
    close(grad, want_grad, dtype)
    p = inputs(dtype, (8, 3), seed=7) / 100
    host.call(f"mse_{SFX[dtype]}", p, t, grad, parts, p.size, 1 / p.size, dtype=dtype)
    d = p.astype(numpy.float64) - t
    close(parts.sum(dtype=numpy.float64), (d * d).mean(), dtype)
    close(grad, 2 * d / p.size, dtype)


def _flat(dtype, n=37, seed=8):
    rng = numpy.random.default_rng(seed)
    g = rng.normal(size=n) * rng.choice([1e-8, 1.0, 1e4], n)
    return rng.normal(size=n).astype(dtype), g.astype(dtype)


@needs_cxx
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.01, False), (0.01, True)])
def test_adam_kernel_reads_its_step_from_memory(dtype, wd, decoupled):
    p, g = _flat(dtype)
    m, v = numpy.zeros_like(p), numpy.zeros_like(p)
    step, skip = numpy.zeros(1, numpy.int64), numpy.zeros(1, numpy.int32)
    ref = (p.astype(numpy.float64), numpy.zeros(p.size), numpy.zeros(p.size))
    l2 = wd if not decoupled else 0.0
    decay = 1 - 1e-3 * wd if decoupled else 1.0
    for t in (1, 2, 3):
        host.call("increment_step", step, skip)
        host.call(f"adam_{SFX[dtype]}", p, g, m, v, step, skip, p.size, 1e-3, 0.9, 0.999,
                  1e-7, l2, decay, dtype=dtype)
        ref = reference.adam(*ref[:1], g.astype(numpy.float64), *ref[1:], t, 1e-3, 0.9, 0.999,
                             1e-7, wd, decoupled)
    assert step[0] == 3
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=1e-4, atol=1e-6)
    numpy.testing.assert_allclose(p, ref[0], **tol)
    numpy.testing.assert_allclose(m, ref[1], **tol)
    numpy.testing.assert_allclose(v, ref[2], **dict(tol, atol=1e-6 * float(numpy.abs(ref[2]).max())))
    # a set skip flag freezes everything, the step count included
    before = p.copy()
    skip[0] = 1
    host.call("increment_step", step, skip)
    host.call(f"adam_{SFX[dtype]}", p, g, m, v, step, skip, p.size, 1e-3, 0.9, 0.999, 1e-7,
              l2, decay, dtype=dtype)
    assert step[0] == 3
    numpy.testing.assert_array_equal(p, before)


@needs_cxx
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_kernel(dtype, momentum, nesterov):
    p, g = _flat(dtype, seed=9)
    vel = numpy.zeros_like(p)
    ref_p, ref_v = p.astype(numpy.float64), numpy.zeros(p.size)
    skip = numpy.zeros(1, numpy.int32)
    for _ in range(3):
        host.call(f"sgd_{SFX[dtype]}", p, g, vel, skip, p.size, 1e-3, momentum, nesterov, 0.01,
                  dtype=dtype)
        ref_p, ref_v = reference.sgd(ref_p, g.astype(numpy.float64), ref_v, 1e-3, momentum,
                                     nesterov, 0.01)
    close(p, ref_p, dtype)


@needs_cxx
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_rmsprop_kernel(dtype, momentum):
    p, g = _flat(dtype, seed=10)
    sq, vel = numpy.zeros_like(p), numpy.zeros_like(p)
    ref = (p.astype(numpy.float64), numpy.zeros(p.size), numpy.zeros(p.size))
    skip = numpy.zeros(1, numpy.int32)
    for _ in range(3):
        host.call(f"rmsprop_{SFX[dtype]}", p, g, sq, vel, skip, p.size, 1e-3, 0.9, 1e-7,
                  momentum, 0.0, dtype=dtype)
        ref = reference.rmsprop(ref[0], g.astype(numpy.float64), ref[1], ref[2], 1e-3, 0.9,
                                1e-7, momentum, 0.0)
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=1e-4, atol=1e-6)
    numpy.testing.assert_allclose(p, ref[0], **tol)


@needs_cxx
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_kernel_matches_the_numpy_backend_bit_for_bit(dtype):
    mask = numpy.empty(5000, dtype)
    counter = numpy.array([41], numpy.int64)
    host.call(f"dropout_mask_{SFX[dtype]}", mask, numpy.uint64(2**63 + 12345), counter,
              mask.size, 0.25, dtype=dtype)
    want = NumpyBackend(accelerate=False).dropout_mask((5000,), 0.25, 2**63 + 12345, 41,
                                                       dtype=dtype)
    numpy.testing.assert_array_equal(mask, want)
    assert 0.22 < (mask == 0).mean() < 0.28


@needs_cxx
@pytest.mark.parametrize("dtype", DTYPES)
def test_guard_finite_records_the_first_bad_step_only(dtype):
    flag, bad = numpy.zeros(1, numpy.int32), numpy.zeros(1, numpy.int64)
    for step_no, loss in [(3, 0.5), (4, float("nan")), (5, float("inf"))]:
        host.call(f"guard_finite_{SFX[dtype]}", numpy.array([loss], dtype),
                  numpy.array([step_no], numpy.int64), flag, bad, dtype=dtype)
    assert flag[0] == 1 and bad[0] == 4


def test_base_backend_guard_matches_the_kernel_semantics():
    be = NumpyBackend(accelerate=False)
    flag, bad = be.zeros((1,), "int32"), be.zeros((1,), "int64")
    for step_no, loss in [(3, 0.5), (4, float("-inf")), (5, float("nan"))]:
        be.guard_finite(numpy.float32(loss), numpy.array([step_no]), flag, bad)
    assert flag[0] == 1 and bad[0] == 4


def test_kernels_import_needs_no_cupy():
    code = ("import sys; sys.modules['cupy'] = None; import dnn.kernels, dnn.kernels.cuda, "
            "dnn.kernels.source, dnn.kernels.reference, dnn.backends.cupy_backend; print('ok')")
    out = python("-c", code)
    assert out.stdout.strip() == "ok", out.stderr


@needs_cxx
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 256, 1000])
def test_sum_to_scalar_and_accumulate_kernels(dtype, n):
    x = inputs(dtype, (n,)) / 100
    out = numpy.zeros(1, dtype)
    host.call(f"sum_to_scalar_{SFX[dtype]}", x, n, out, dtype=dtype)
    close(out[0], x.astype(numpy.float64).sum(), dtype)
    acc = numpy.array([1.5], dtype)
    host.call(f"accumulate_{SFX[dtype]}", acc, out, 4.0, dtype=dtype)
    close(acc[0], 1.5 + 4.0 * float(out[0]), dtype)


# --------------------------------------------------------------- property tests
from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays  # noqa: E402

_values = st.one_of(st.floats(-60, 60, width=32),
                  st.sampled_from([float(numpy.float32(v)) for v in EXTREMES]))
_matrix = st.tuples(st.integers(1, 9), st.integers(1, 9)).flatmap(
    lambda s: arrays(numpy.float32, s, elements=_values))


@needs_cxx
@pytest.mark.parametrize("act", ACTS)
@given(x=_matrix)
def test_bias_activation_kernel_property(act, x):
    x = numpy.ascontiguousarray(x)
    bias = numpy.zeros(x.shape[1], numpy.float32)
    y = numpy.empty_like(x)
    host.call(f"bias_{act}_forward_f32", x, bias, y, x.size, x.shape[1], 0.01)
    with numpy.errstate(over="ignore"):
        want = reference.activation(act, x.astype(numpy.float64))
    numpy.testing.assert_allclose(y, want, rtol=2e-5, atol=1e-5)


@needs_cxx
@given(z=_matrix, seed=st.integers(0, 2**16))
# Found by hypothesis: lse - z at logits of 1e4 lost 2e-4 of the loss in float32.
@example(z=numpy.array([[0.0, 1e4, 1e4]], dtype=numpy.float32), seed=0)
def test_softmax_xent_kernel_property(z, seed):
    z = numpy.ascontiguousarray(z)
    rows, cols = z.shape
    labels = numpy.random.default_rng(seed).integers(0, cols, rows).astype(numpy.int64)
    grad, row_loss = numpy.empty_like(z), numpy.empty(rows, numpy.float32)
    host.call("softmax_xent_sparse_f32", z, labels, grad, row_loss, rows, cols, 1 / rows)
    want_loss, want_grad = reference.softmax_cross_entropy(z.astype(numpy.float64), labels)
    assert numpy.isfinite(row_loss).all() and numpy.isfinite(grad).all()
    numpy.testing.assert_allclose(row_loss.sum(dtype=numpy.float64), want_loss, rtol=1e-4,
                                  atol=1e-4)
    numpy.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)


@needs_cxx
@given(z=_matrix, seed=st.integers(0, 2**16))
def test_sigmoid_bce_kernel_property(z, seed):
    z = numpy.ascontiguousarray(z)
    t = numpy.random.default_rng(seed).integers(0, 2, z.shape).astype(numpy.float32)
    grad, parts = numpy.empty_like(z), numpy.empty_like(z)
    host.call("sigmoid_bce_f32", z, t, grad, parts, z.size, 1 / z.size)
    want_loss, want_grad = reference.sigmoid_binary_cross_entropy(z.astype(numpy.float64), t)
    numpy.testing.assert_allclose(parts.sum(dtype=numpy.float64), want_loss, rtol=1e-4,
                                  atol=1e-4)
    numpy.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------- bfloat16 kernels
try:
    import ml_dtypes
except ImportError:  # the bf16 extra is not installed: only these tests skip
    ml_dtypes = None
needs_bf16 = pytest.mark.skipif(ml_dtypes is None, reason="ml_dtypes not installed")
BF16 = numpy.dtype(ml_dtypes.bfloat16) if ml_dtypes else None
# One bfloat16 rounding: the relative spacing is 2^-8.
BF16_TOL = dict(rtol=2 ** -7, atol=1e-6)  # atol: float32 gelu underflows near -8, as in f32


def bf16(values):
    return numpy.ascontiguousarray(numpy.asarray(values, dtype=numpy.float32).astype(BF16))


@needs_bf16
@needs_cxx
def test_cast_kernels_round_like_ml_dtypes():
    rng = numpy.random.default_rng(11)
    x = numpy.concatenate([
        rng.normal(0, 1e3, 1000), [0.0, -0.0, 1.0, -1.0, 3.4e38, -3.4e38, 1e-40, -1e-40,
                                   numpy.inf, -numpy.inf, numpy.nan],
        # halfway cases: the 17th bit set exactly, ties to even
        numpy.array([0x3F808000, 0x3F818000, 0x3F80FFFF], numpy.uint32).view(numpy.float32),
    ]).astype(numpy.float32)
    y = numpy.empty(x.size, BF16)
    host.call("cast_f32_bf16", x, y, x.size)
    want = x.astype(BF16)
    same = (y.view(numpy.uint16) == want.view(numpy.uint16)) | (numpy.isnan(x))
    assert same.all(), x[~same]
    assert numpy.isnan(y.astype(numpy.float32)[numpy.isnan(x)]).all()
    back = numpy.empty(x.size, numpy.float32)
    host.call("cast_bf16_f32", y, back, x.size)
    numpy.testing.assert_array_equal(back, y.astype(numpy.float32))


@needs_bf16
@needs_cxx
@pytest.mark.parametrize("act", ACTS)
def test_bf16_bias_activation_kernel(act):
    x = bf16(inputs("float32", (7, 9)))
    bias = bf16(inputs("float32", (9,), seed=1) * 0.1)
    y = numpy.empty_like(x)
    host.call(f"bias_{act}_forward_bf16", x, bias, y, x.size, 9, 0.01)
    wide = x.astype(numpy.float64) + bias.astype(numpy.float64)
    want = reference.activation(act, wide.astype(numpy.float32).astype(numpy.float64))
    numpy.testing.assert_allclose(y.astype(numpy.float64), want, **BF16_TOL)


@needs_bf16
@needs_cxx
@pytest.mark.parametrize("act", ACTS[1:])
def test_bf16_activation_backward_kernel(act):
    x = bf16(inputs("float32", (6, 8)))
    y = bf16(reference.activation(act, x.astype(numpy.float64)))
    dy = bf16(inputs("float32", (6, 8), seed=2) / 10)
    dx = numpy.empty_like(x)
    host.call(f"{act}_backward_bf16", dy, x, y, dx, x.size, 0.01)
    want = reference.activation_backward(act, *(a.astype(numpy.float64) for a in (dy, x, y)))
    numpy.testing.assert_allclose(dx.astype(numpy.float64), want, rtol=2 ** -6, atol=1e-6)


@needs_bf16
@needs_cxx
def test_bf16_dropout_kernel_matches_the_numpy_backend():
    mask = numpy.empty(3000, BF16)
    host.call("dropout_mask_bf16", mask, numpy.uint64(99), numpy.array([5], numpy.int64),
              mask.size, 0.1)
    want = NumpyBackend(accelerate=False).dropout_mask((3000,), 0.1, 99, 5, dtype=BF16)
    numpy.testing.assert_array_equal(mask.view(numpy.uint16), want.view(numpy.uint16))
