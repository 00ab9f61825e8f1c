"""The CUDA kernels without a GPU: the catalogue parsed from the source, NVRTC compiling
every entry point for sm_80 and sm_90, and each kernel's arithmetic, built for the host
from the same source and run through the same launchers the CuPy backend calls,
against kernels/reference.py on random and extreme inputs."""
import inspect
import re

import numpy
import pytest
from hypothesis import example, given, strategies as st
from hypothesis.extra.numpy import arrays
from support import python

import dnn
from dnn.backends import NumpyBackend
from dnn.kernels import catalogue, host, launch, nvrtc_check, reference
from dnn.kernels.catalogue import CatalogueError
from dnn.kernels.launch import FusedKernels, KernelUnavailable

DTYPES = ["float32", "float64"]
TOL = {"float32": dict(rtol=2e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-14)}
EXTREMES = numpy.array([0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 30.0, -30.0, 100.0, -100.0,
                        1e4, -1e4])
ACTS = list(reference.ELEMENTWISE_ACTIVATIONS)


def _nvrtc_available():
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception:
        return False
    return True


needs_nvrtc = pytest.mark.skipif(not _nvrtc_available(),
                                 reason="CuPy/NVRTC not installed (pip install '.[nvrtc]')")
needs_cxx = pytest.mark.skipif(host.compiler() is None, reason="no C++ compiler")


# Blocks of 32 (a warp), 256 (the GPU's) and 1024 threads (CUDA's most).
HOST_THREADS = (32, catalogue.THREADS, 1024)


@pytest.fixture(scope="module", params=HOST_THREADS, ids=lambda t: f"{t}threads")
def k(request):
    """The fused kernels built for the host with blocks of real threads, each launch
    run in the forward, reverse and a shuffled order of the threads."""
    if host.compiler() is None:
        pytest.skip("no C++ compiler")
    return FusedKernels(host.HostRuntime(threads=request.param))


# ------------------------------------------------------------------------ catalogue
def test_the_catalogue_is_read_from_the_source():
    kernels = catalogue.kernels()
    assert kernels["bias_act"].dtypes == ("float32", "float64", "bfloat16")
    assert kernels["bias_act"].per_activation and kernels["adam"].dtypes == tuple(DTYPES)
    assert [p.name for p in kernels["adam"].params][:6] == ["p", "g", "m", "v", "step", "skip"]
    assert kernels["dropout_mask"].signature("bfloat16")[-1] == ("scalar", "float32")
    names = catalogue.entry_names()
    assert "dnn_bias_act_gelu_bf16" in names and "dnn_increment_step" in names
    assert len(names) == len(set(names))


def test_every_catalogued_kernel_has_a_launcher():
    source = inspect.getsource(launch)
    unused = [name for name in catalogue.kernels() if f'"{name}"' not in source]
    assert not unused, f"kernels no launcher calls: {unused}"


def test_the_prelude_carries_the_python_constants():
    prelude = catalogue.prelude()
    assert f"#define DNN_GELU_C {reference.GELU_C!r}" in prelude
    assert f"#define DNN_THREADS {catalogue.THREADS}" in prelude
    for code, name in enumerate(reference.ELEMENTWISE_ACTIVATIONS):
        assert f"#define DNN_ACT_{name.upper()} {code}\n" in prelude


@pytest.mark.parametrize("annotation,pattern", [
    ("// dnn:kernel float16\ntemplate <typename T>\n__device__ void f(T* x) {}",
     "unknown dtypes.*float16"),
    ("// dnn:kernel float32\n__device__ void f(float* x) {}", "one typename parameter"),
    ("// dnn:kernel float32\ntemplate <typename T>\n__device__ void f(T* x, size_t n) {}",
     "unsupported type 'size_t'"),
    ("// no kernels here", "no '// dnn:kernel' lines"),
])
def test_catalogue_errors_name_the_kernel_and_the_problem(annotation, pattern):
    with pytest.raises(CatalogueError, match=pattern):
        catalogue.parse(annotation)


# ---------------------------------------------------------------------------- NVRTC
@needs_nvrtc
def test_check_command_compiles_every_kernel():
    out = python("-m", "dnn.kernels", "--check")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == \
        f"compiled {len(catalogue.entry_names())} kernels for sm_80, sm_90"


@needs_nvrtc
def test_the_check_compiles_with_the_options_cupy_compiles_with(monkeypatch):
    """What CuPy's RawModule really hands NVRTC for our options (recorded at NVRTC, no
    GPU needed) is what the check compiles with, include paths aside: the source
    includes nothing."""
    import cupy
    from cupy._core import core
    from cupy.cuda import compiler

    assert "#include" not in catalogue.read_source()
    seen = []

    class Recording(compiler._NVRTCProgram):
        def compile(self, options=(), log_stream=None):
            seen.append(tuple(options))
            return super().compile(options, log_stream)

    monkeypatch.setenv("CUPY_CACHE_IN_MEMORY", "1")
    monkeypatch.setattr(compiler, "_NVRTCProgram", Recording)
    # CuPy picks sm_XX up to the NVRTC's newest (compute_XX past it) from the device;
    # here the device is sm_90 by decree, since there may be none.
    monkeypatch.setattr(compiler, "_get_arch_for_options_for_nvrtc",
                        lambda arch=None: (f"-arch=sm_{arch}", "cubin"))
    unit = catalogue.compile_unit(only=("increment_step", None, None))
    try:  # RawModule's compile (cupy/_core/raw.pyx _get_raw_module), for device sm_90
        core.compile_with_cache(unit, catalogue.NVRTC_OPTIONS, arch="90",
                                prepend_cupy_headers=False, backend="nvrtc")
    except (cupy.cuda.runtime.CUDARuntimeError, cupy.cuda.driver.CUDADriverError):
        pass  # loading the compiled module needs a driver
    compiled = [o for o in seen[-1] if not o.startswith("-I")]
    assert tuple(compiled) == catalogue.nvrtc_options("sm_90", nvrtc_check.uses_pch(
        cupy.cuda.nvrtc))


@needs_nvrtc
def test_planted_error_fails_the_check_with_its_line():
    from dnn.kernels.nvrtc_check import KernelCompileError, check

    source = catalogue.read_source()
    marker = "    T gi = g + l2 * p;\n"
    assert marker in source
    planted = source.replace(marker, marker + "        undeclared_thing += 1;\n", 1)
    line = planted[:planted.index("undeclared_thing")].count("\n") + 1
    with pytest.raises(KernelCompileError, match=rf"dnn_kernels\.cu\({line}\).*undeclared_thing"):
        check(source=planted, archs=("sm_90",))


@needs_nvrtc
def test_a_kernel_missing_from_the_binary_fails_the_check():
    from dnn.kernels.nvrtc_check import KernelCompileError, check

    names = catalogue.entry_names() + ["dnn_bias_act_swish_f32"]
    with pytest.raises(KernelCompileError, match="dnn_bias_act_swish_f32"):
        check(archs=("sm_80",), names=names)


# ------------------------------------------------------------------------ launches
def test_a_dtype_the_kernel_is_not_built_for_is_refused(k):
    x = numpy.zeros((2, 3), numpy.float32)
    with pytest.raises(KernelUnavailable, match="bias_softmax is built for float32, float64"):
        FusedKernels(k.runtime).bias_activation(x.astype(numpy.float16), None, "softmax", x)


def test_host_launches_check_each_array_against_the_signature(k):
    x = numpy.zeros((2, 3), numpy.float32)
    with pytest.raises(TypeError, match="expected a float32 array; got float64"):
        k.bias_activation(x, numpy.zeros(3), "relu", x)


# ----------------------------------------------------------------- host arithmetic
def inputs(dtype, shape, seed=0):
    """Random values with the extremes spliced in."""
    rng = numpy.random.default_rng(seed)
    x = rng.normal(0, 3, shape)
    flat = x.reshape(-1)
    n = min(flat.size, EXTREMES.size)
    flat[:n] = EXTREMES[:n]
    return numpy.ascontiguousarray(x.astype(dtype))


def wide(a):
    return numpy.array(a, dtype=numpy.float64)  # a copy: kernels update in place


def close(got, want, dtype):
    assert numpy.isfinite(got).all()
    numpy.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS + ["softmax"])
def test_bias_activation_kernel(k, dtype, act):
    x = inputs(dtype, (7, 9))
    bias = inputs(dtype, (9,), seed=1) * 0.1
    close(k.bias_activation(x, bias, act, numpy.empty_like(x)),
          reference.bias_activation(act, wide(x), wide(bias)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS + ["softmax"])
def test_activation_backward_kernel(k, dtype, act):
    x = inputs(dtype, (6, 8))
    y = reference.activation(act, wide(x)).astype(dtype)
    dy = inputs(dtype, (6, 8), seed=2) / 10
    got = k.activation_backward(act, dy, x, y, numpy.empty_like(x))
    close(got, reference.activation_backward(act, wide(dy), wide(x), wide(y)), dtype)


def partials(dtype):
    # poisoned: a reduction must write or zero every slot it adds
    return numpy.full(catalogue.REDUCE_BLOCKS, numpy.nan, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("rows,cols", [(9, 5), (700, 3), (3, 300)])
@pytest.mark.parametrize("weighted,smoothing", [(False, 0.0), (True, 0.1)])
def test_softmax_cross_entropy_kernel(k, dtype, dense, rows, cols, weighted, smoothing):
    z = inputs(dtype, (rows, cols))
    rng = numpy.random.default_rng(5)
    labels = rng.integers(0, cols, rows)
    target = numpy.eye(cols, dtype=dtype)[labels] if dense else labels
    weights = rng.uniform(0, 2, rows).astype(dtype) if weighted else None
    grad, loss = numpy.empty_like(z), numpy.empty(1, dtype)
    k.softmax_cross_entropy(z, target, weights, grad, partials(dtype), loss, smoothing)
    want_loss, want_grad = reference.softmax_cross_entropy(
        wide(z), target, weights=None if weights is None else wide(weights),
        label_smoothing=smoothing)
    close(loss[0], want_loss, dtype)
    close(grad, want_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,extra", [("sigmoid_bce", (0.0,)), ("sigmoid_bce", (0.2,)),
                                        ("mse", ()), ("mae", ()), ("huber", (1.0,)),
                                        ("huber", (0.3,))])
@pytest.mark.parametrize("shape", [(8, 3), (4000, 70)])
@pytest.mark.parametrize("weighted", [False, True])
def test_elementwise_loss_kernels(k, dtype, loss, extra, shape, weighted):
    z = inputs(dtype, shape) / (1 if loss == "sigmoid_bce" else 100)
    rng = numpy.random.default_rng(6)
    t = rng.integers(0, 2, shape).astype(dtype)
    weights = rng.uniform(0, 2, shape[0]).astype(dtype) if weighted else None
    grad, out = numpy.empty_like(z), numpy.empty(1, dtype)
    k.elementwise_loss(loss, z, t, weights, grad, partials(dtype), out, *extra)
    w = None if weights is None else wide(weights)
    if loss == "sigmoid_bce":
        want_loss, want_grad = reference.sigmoid_binary_cross_entropy(
            wide(z), wide(t), weights=w, label_smoothing=extra[0])
    elif loss == "huber":
        want_loss, want_grad = reference.huber(wide(z), wide(t), extra[0], weights=w)
    else:
        fn = reference.mean_squared_error if loss == "mse" else reference.mean_absolute_error
        want_loss, want_grad = fn(wide(z), wide(t), weights=w)
    close(out[0], want_loss, dtype)
    close(grad, want_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_grad", [False, True])
def test_regularization_kernel(k, dtype, with_grad):
    w = inputs(dtype, (13, 7)) / 100
    g = inputs(dtype, (13, 7), seed=3)
    before = g.copy()
    total = numpy.array([0.5], dtype)
    k.add_regularization(w, g if with_grad else None, 0.01, 0.02, partials(dtype), total)
    penalty, grad = reference.regularization(wide(w), 0.01, 0.02)
    close(total[0], 0.5 + penalty, dtype)
    close(g, wide(before) + grad if with_grad else before, dtype)


def rate(value, dtype):
    """A learning rate as the kernels read it: a (1,) array."""
    return numpy.array([value], dtype)


def _flat(dtype, n=37, seed=8):
    rng = numpy.random.default_rng(seed)
    g = rng.normal(size=n) * rng.choice([1e-8, 1.0, 1e4], n)
    return rng.normal(size=n).astype(dtype), g.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.01, False), (0.01, True)])
def test_adam_kernel_reads_its_step_from_memory(k, dtype, wd, decoupled):
    p, g = _flat(dtype)
    m, v = numpy.zeros_like(p), numpy.zeros_like(p)
    step, skip = numpy.zeros(1, numpy.int64), numpy.zeros(1, numpy.int32)
    ref = (wide(p), numpy.zeros(p.size), numpy.zeros(p.size))
    for t in (1, 2, 3):
        k.increment_step(step, skip)
        k.adam(p, g, m, v, step, skip, rate(1e-3, dtype), 0.9, 0.999, 1e-7, wd, decoupled)
        ref = reference.adam(ref[0], wide(g), ref[1], ref[2], t, 1e-3, 0.9, 0.999, 1e-7, wd,
                             decoupled)
    assert step[0] == 3
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=1e-4, atol=1e-6)
    numpy.testing.assert_allclose(p, ref[0], **tol)
    numpy.testing.assert_allclose(m, ref[1], **tol)
    numpy.testing.assert_allclose(v, ref[2], **dict(tol, atol=1e-6 * float(abs(ref[2]).max())))
    # a set skip flag freezes everything, the step count included
    before = p.copy()
    skip[0] = 1
    k.increment_step(step, skip)
    k.adam(p, g, m, v, step, skip, rate(1e-3, dtype), 0.9, 0.999, 1e-7, wd, decoupled)
    assert step[0] == 3
    numpy.testing.assert_array_equal(p, before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0, 1])
def test_optimizer_kernels_stream_aligned_and_unaligned_buffers(k, dtype, offset):
    """16-byte packs where every buffer is aligned (offset 0), one element at a time
    otherwise; the same arithmetic either way."""
    n = 1003
    bufs = [numpy.zeros(n + 8, dtype)[offset:offset + n] for _ in range(4)]
    p, g, m, v = bufs
    p[:], g[:] = _flat(dtype, n, seed=3)
    step = numpy.ones(1, numpy.int64)
    want = reference.adam(wide(p), wide(g), 0.0, 0.0, 1, 1e-3, 0.9, 0.999, 1e-7)
    k.adam(p, g, m, v, step, None, rate(1e-3, dtype), 0.9, 0.999, 1e-7, 0.0, False)
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=1e-4, atol=1e-6)
    for got, expected in zip((p, m, v), want):
        numpy.testing.assert_allclose(got, expected, **tol)


@needs_nvrtc
def test_optimizer_updates_load_and_store_16_bytes_at_a_time():
    from cupy.cuda import nvrtc

    prog = nvrtc.createProgram(catalogue.compile_unit(), "dnn_kernels.cu", [], [])
    try:
        nvrtc.compileProgram(prog, list(catalogue.nvrtc_options("compute_90")))
        ptx = nvrtc.getPTX(prog).decode()
    finally:
        nvrtc.destroyProgram(prog)
    updates = ("adam", "sgd_legacy", "rmsprop_legacy") + tuple(
        f"{rule}_apply" for rule in reference.RULES)
    for kernel, suffix in [(k, s) for k in updates for s in ("f32", "f64")]:
        body = ptx.split(f".entry dnn_{kernel}_{suffix}(")[1].split(".entry")[0]
        vector = "v4.f32" if suffix == "f32" else "v2.f64"
        assert f"ld.global.{vector}" in body and f"st.global.{vector}" in body, kernel
        assert ".local" not in body, f"{kernel}_{suffix} spills to local memory"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_legacy_kernel(k, dtype, momentum, nesterov):
    p, g = _flat(dtype, seed=9)
    vel = numpy.zeros_like(p) if momentum else None
    ref_p, ref_v = wide(p), numpy.zeros(p.size)
    for _ in range(3):
        k.sgd_legacy(p, g, vel, None, rate(1e-3, dtype), momentum, nesterov, 0.01)
        ref_p, ref_v = reference.sgd_legacy(ref_p, wide(g), ref_v, 1e-3, momentum, nesterov,
                                            0.01)
    close(p, ref_p, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_rmsprop_legacy_kernel(k, dtype, momentum):
    p, g = _flat(dtype, seed=10)
    sq, vel = numpy.zeros_like(p), numpy.zeros_like(p) if momentum else None
    ref = (wide(p), numpy.zeros(p.size), numpy.zeros(p.size))
    for _ in range(3):
        k.rmsprop_legacy(p, g, sq, vel, None, rate(1e-3, dtype), 0.9, 1e-7, momentum, 0.0)
        ref = reference.rmsprop_legacy(ref[0], wide(g), ref[1], ref[2], 1e-3, 0.9, 1e-7,
                                       momentum, 0.0)
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=1e-4, atol=1e-6)
    numpy.testing.assert_allclose(p, ref[0], **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_kernel_matches_the_numpy_backend_bit_for_bit(k, dtype):
    whole = k.dropout_mask(numpy.empty(5000, dtype), 77, numpy.array([3], numpy.int64), 0.4)
    tail = k.dropout_mask(numpy.empty(1800, dtype), 77, numpy.array([3], numpy.int64), 0.4,
                          offset=3200)
    numpy.testing.assert_array_equal(tail, whole[3200:])  # a rank's rows of the mask
    numpy.testing.assert_array_equal(tail, reference.dropout_mask(1800, 0.4, 77, 3, dtype,
                                                                  offset=3200))
    mask = k.dropout_mask(numpy.empty(5000, dtype), 2**63 + 12345,
                          numpy.array([41], numpy.int64), 0.25)
    want = NumpyBackend(accelerate=False).dropout_mask((5000,), 0.25, 2**63 + 12345, 41,
                                                       dtype=dtype)
    numpy.testing.assert_array_equal(mask, want)
    assert 0.22 < (mask == 0).mean() < 0.28


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(50, 1), (50, 7), (700, 3), (5, 300)])
def test_metric_kernels_add_to_running_totals(k, dtype, rows, cols):
    rng = numpy.random.default_rng(rows + cols)
    scores = inputs(dtype, (rows, cols))
    scores[rows // 2, :] = 1.0  # a tie: the first maximum wins, as numpy.argmax
    labels = rng.integers(0, cols, rows)
    onehot = numpy.eye(cols, dtype=dtype)[labels]
    targets = rng.integers(0, 2, (rows, cols)).astype(dtype)
    total = numpy.array([5.0], dtype)  # a running total from earlier batches
    k.add_argmax_matches(scores, labels, partials(dtype), total)
    k.add_argmax_matches(scores, onehot, partials(dtype), total)
    k.add_threshold_matches(scores, targets, 0.5, partials(dtype), total)
    want = 5.0 + 2 * reference.argmax_matches(scores, labels) + \
        reference.threshold_matches(scores, targets, 0.5)
    assert total[0] == want
    for act in ("linear", "sigmoid"):
        err = numpy.zeros(1, dtype)
        k.add_abs_error(act, scores, targets, partials(dtype), err)
        close(err[0], reference.abs_error(wide(scores), wide(targets), act), dtype)


@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_gather_rows_reads_its_place_from_device_memory(k, dtype):
    src = numpy.arange(40, dtype=dtype).reshape(10, 4)
    order = numpy.random.default_rng(0).permutation(10).astype(numpy.int64)
    cursor = numpy.array([3], numpy.int64)
    out = k.gather_rows(src, order, cursor, numpy.empty((4, 4), dtype))
    numpy.testing.assert_array_equal(out, src[order[3:7]])
    k.advance(cursor, 4)
    assert cursor[0] == 7


@pytest.mark.parametrize("dtype", DTYPES)
def test_guard_finite_records_the_first_bad_step_only(k, dtype):
    flag, bad = numpy.zeros(1, numpy.int32), numpy.zeros(1, numpy.int64)
    for step_no, loss in [(3, 0.5), (4, float("nan")), (5, float("inf"))]:
        k.guard_finite(numpy.array([loss], dtype), numpy.array([step_no], numpy.int64), flag,
                       bad)
    assert flag[0] == 1 and bad[0] == 4


def test_base_backend_guard_matches_the_kernel_semantics():
    be = NumpyBackend(accelerate=False)
    flag, bad = be.zeros((1,), "int32"), be.zeros((1,), "int64")
    for step_no, loss in [(3, 0.5), (4, float("-inf")), (5, float("nan"))]:
        be.guard_finite(numpy.float32(loss), numpy.array([step_no]), flag, bad)
    assert flag[0] == 1 and bad[0] == 4


def test_kernels_import_needs_no_cupy():
    code = ("import sys; sys.modules['cupy'] = None; import dnn.kernels, dnn.kernels.cuda, "
            "dnn.kernels.catalogue, dnn.kernels.reference, dnn.backends.cupy_backend; "
            "print('ok')")
    out = python("-c", code)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 256, 1000, 300_000])
def test_multi_block_sum_and_accumulate_kernels(k, dtype, n):
    """300,000 values take all 1024 partial slots (the host runs the grid's blocks in
    turn); fewer values leave slots that the first launch must zero."""
    x = inputs(dtype, (n,)) / 100
    out = k.sum(x, partials(dtype), numpy.empty(1, dtype))
    scale = numpy.abs(wide(x)).sum()  # cancellation: compare with the summands' size
    numpy.testing.assert_allclose(out[0], wide(x).sum(),
                                  atol=scale * (1e-6 if dtype == "float32" else 1e-14))
    acc = numpy.array([1.5], dtype)
    k.accumulate(acc, out, 4.0)
    close(acc[0], 1.5 + 4.0 * float(out[0]), dtype)


# --------------------------------------------------------------- property tests
_values = st.one_of(st.floats(-60, 60, width=32),
                    st.sampled_from([float(numpy.float32(v)) for v in EXTREMES]))
_matrix = st.tuples(st.integers(1, 9), st.integers(1, 9)).flatmap(
    lambda s: arrays(numpy.float32, s, elements=_values))


@needs_cxx
@pytest.mark.parametrize("act", ACTS)
@given(x=_matrix)
def test_bias_activation_kernel_property(k, act, x):
    x = numpy.ascontiguousarray(x)
    y = k.bias_activation(x, numpy.zeros(x.shape[1], numpy.float32), act, numpy.empty_like(x))
    with numpy.errstate(over="ignore"):
        want = reference.activation(act, wide(x))
    numpy.testing.assert_allclose(y, want, rtol=2e-5, atol=1e-5)


@needs_cxx
@given(z=_matrix, seed=st.integers(0, 2**16))
# Found by hypothesis: lse - z at logits of 1e4 lost 2e-4 of the loss in float32.
@example(z=numpy.array([[0.0, 1e4, 1e4]], dtype=numpy.float32), seed=0)
def test_softmax_xent_kernel_property(k, z, seed):
    z = numpy.ascontiguousarray(z)
    rows, cols = z.shape
    labels = numpy.random.default_rng(seed).integers(0, cols, rows).astype(numpy.int64)
    grad, loss = numpy.empty_like(z), numpy.empty(1, numpy.float32)
    k.softmax_cross_entropy(z, labels, None, grad, partials("float32"), loss)
    want_loss, want_grad = reference.softmax_cross_entropy(wide(z), labels)
    assert numpy.isfinite(loss).all() and numpy.isfinite(grad).all()
    numpy.testing.assert_allclose(loss[0], want_loss, rtol=1e-4, atol=1e-4)
    numpy.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)


@needs_cxx
@given(z=_matrix, seed=st.integers(0, 2**16))
def test_sigmoid_bce_kernel_property(k, z, seed):
    z = numpy.ascontiguousarray(z)
    t = numpy.random.default_rng(seed).integers(0, 2, z.shape).astype(numpy.float32)
    grad, loss = numpy.empty_like(z), numpy.empty(1, numpy.float32)
    k.elementwise_loss("sigmoid_bce", z, t, None, grad, partials("float32"), loss, 0.0)
    want_loss, want_grad = reference.sigmoid_binary_cross_entropy(wide(z), wide(t))
    numpy.testing.assert_allclose(loss[0], want_loss, rtol=1e-4, atol=1e-4)
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
def test_cast_kernels_round_like_ml_dtypes(k):
    rng = numpy.random.default_rng(11)
    x = numpy.concatenate([
        rng.normal(0, 1e3, 1000), [0.0, -0.0, 1.0, -1.0, 3.4e38, -3.4e38, 1e-40, -1e-40,
                                   numpy.inf, -numpy.inf, numpy.nan],
        # halfway cases: the 17th bit set exactly, ties to even
        numpy.array([0x3F808000, 0x3F818000, 0x3F80FFFF], numpy.uint32).view(numpy.float32),
    ]).astype(numpy.float32)
    y = k.cast(x, numpy.empty(x.size, BF16))
    want = x.astype(BF16)
    same = (y.view(numpy.uint16) == want.view(numpy.uint16)) | (numpy.isnan(x))
    assert same.all(), x[~same]
    assert numpy.isnan(y.astype(numpy.float32)[numpy.isnan(x)]).all()
    back = k.cast(y, numpy.empty(x.size, numpy.float32))
    numpy.testing.assert_array_equal(back, y.astype(numpy.float32))


@needs_bf16
@pytest.mark.parametrize("act", ACTS)
def test_bf16_bias_activation_kernel(k, act):
    x = bf16(inputs("float32", (7, 9)))
    bias = bf16(inputs("float32", (9,), seed=1) * 0.1)
    y = k.bias_activation(x, bias, act, numpy.empty_like(x))
    summed = (wide(x) + wide(bias)).astype(numpy.float32)
    numpy.testing.assert_allclose(wide(y), reference.activation(act, wide(summed)), **BF16_TOL)


@needs_bf16
@pytest.mark.parametrize("act", ACTS)
def test_bf16_activation_backward_kernel(k, act):
    x = bf16(inputs("float32", (6, 8)))
    y = bf16(reference.activation(act, wide(x)))
    dy = bf16(inputs("float32", (6, 8), seed=2) / 10)
    dx = k.activation_backward(act, dy, x, y, numpy.empty_like(x))
    want = reference.activation_backward(act, wide(dy), wide(x), wide(y))
    numpy.testing.assert_allclose(wide(dx), want, rtol=2 ** -6, atol=1e-6)


@needs_bf16
def test_bf16_dropout_kernel_matches_the_numpy_backend(k):
    mask = k.dropout_mask(numpy.empty(3000, BF16), 99, numpy.array([5], numpy.int64), 0.1)
    want = NumpyBackend(accelerate=False).dropout_mask((3000,), 0.1, 99, 5, dtype=BF16)
    numpy.testing.assert_array_equal(mask.view(numpy.uint16), want.view(numpy.uint16))


def test_the_source_states_no_constant_of_its_own():
    """GELU's and leaky ReLU's coefficients and the block size come from the prelude."""
    source = catalogue.read_source()
    for value in ("0.044715", "0.7978845608", "0.01", "256"):
        assert not re.search(rf"(?<![\w.]){re.escape(value)}", source), value


def test_cuda_launches_pass_each_scalar_as_its_c_type_and_null_for_no_array():
    """What CuPy receives, without a GPU: a stand-in module records each launch."""
    from dnn.kernels.cuda import NULL, CudaRuntime

    launches = []

    class Module:
        def __init__(self, code, options):
            assert code.count('extern "C" __global__') == 1 and options == catalogue.NVRTC_OPTIONS

        def get_function(self, name):
            return lambda grid, block, args: launches.append((name, grid, block, args))

    class FakeCupy:
        RawModule = Module

    k = FusedKernels(CudaRuntime(FakeCupy))
    p = numpy.zeros(1000, numpy.float32)
    k.sgd_legacy(p, p, None, None, rate(0.1, "float32"), 0.0, True, 0.0)
    name, grid, block, args = launches[-1]
    assert name == "dnn_sgd_legacy_f32" and block == (catalogue.THREADS,)
    assert grid == (-(-1000 // catalogue.THREADS),)
    assert args[2] is NULL and args[3] is NULL
    assert [type(a) for a in args[4:]] == [numpy.int64, numpy.ndarray, numpy.float32,
                                           numpy.int32, numpy.float32]  # lr: device memory
    k.increment_step(numpy.zeros(1, numpy.int64))
    assert launches[-1][:3] == ("dnn_increment_step", (1,), (1,))
    k.sum(p, numpy.zeros(catalogue.REDUCE_BLOCKS, numpy.float32), p[:1])
    assert [launch[:3] for launch in launches[-2:]] == [
        ("dnn_block_sums_f32", (4,), (catalogue.THREADS,)),
        ("dnn_reduce_partials_f32", (1,), (catalogue.THREADS,))]


# ------------------------------------------------------------- launch configurations
H100_SMS = 132
FEW_BLOCKS_PER_SM = 4


class _Shape:
    """Stands in for a device array: the launchers read only shape, size, ndim, dtype."""

    def __init__(self, shape, dtype="float32"):
        self.shape, self.dtype = tuple(shape), numpy.dtype(dtype)
        self.size, self.ndim = int(numpy.prod(shape)), len(shape)

    def __getitem__(self, index):  # a slice of a 1-D stand-in
        return _Shape((len(range(*index.indices(self.shape[0]))),), self.dtype)


class _Recorder:
    def __init__(self):
        self.launches = []
        self.kernels = set()

    def entry(self, kernel, dtype, activation):
        self.kernels.add(kernel.name)
        return kernel.entry_name(dtype, activation)

    def launch(self, entry, config, args):
        self.launches.append((entry, config, args))


@pytest.mark.parametrize("rows,cols", [(256, 10), (4096, 10), (4096, 1024), (4096, 4096),
                                       (65536, 784), (64, 256)])
def test_every_grid_scales_with_its_work(rows, cols):
    """An O(n) kernel gets at least min(ceil(n / threads), a few blocks per SM of an H100)
    blocks; the fixed-size second pass of a reduction and the one-thread bookkeeping
    kernels touch O(1) elements."""
    rec = _Recorder()
    k = FusedKernels(rec)
    a, b = _Shape((rows, cols)), _Shape((cols,))
    labels, flat = _Shape((rows,), "int64"), _Shape((rows * cols,))
    one, step, flag = _Shape((1,)), _Shape((1,), "int64"), _Shape((1,), "int32")
    part = _Shape((catalogue.REDUCE_BLOCKS,))
    for act in ACTS + ["softmax"]:
        k.bias_activation(a, b, act, a)
        k.activation_backward(act, a, a, a, a)
    weights = _Shape((rows,))
    k.softmax_cross_entropy(a, labels, weights, a, part, one)
    k.softmax_cross_entropy(a, a, None, a, part, one)
    k.softmax_cross_entropy(a, labels, weights, a, part, one, 0.0, (3, one))  # ignore_class
    k.select_scores(a, a, a, a, 5, None, "softmax")
    for loss, extra in (("sigmoid_bce", (0.1,)), ("mse", ()), ("mae", ()), ("huber", (1.0,))):
        k.elementwise_loss(loss, a, a, weights, a, part, one, *extra)
    k.add_regularization(flat, flat, 0.01, 0.01, part, one)
    k.add_top_k_matches(a, labels, 5, part, one)
    k.add_top_k_matches(a, a, 5, part, one)
    k.add_binary_counts(a, a, 0.5, part, _Shape((3,)))
    k.add_threshold_histogram("sigmoid", a, a, 200, _Shape((402,)))
    stats = _Shape((cols,))
    k.center_square(a, stats, a)
    k.product(a, a, a)
    k.batch_stats("float32", stats, stats, stats, stats, stats, stats, rows, 0.99)
    k.column_affine(a, stats, stats, b, b, a, a, 1e-3)
    k.batch_norm_backward(a, a, b, stats, stats, stats, a, 1e-3, False)
    k.layer_norm(a, b, b, a, a, labels, 1e-3)
    k.layer_norm_backward(a, a, b, labels, a)
    k.sum(flat, part, one)
    k.adam(flat, flat, flat, flat, step, flag, one, 0.9, 0.999, 1e-7, 0.0, False)
    k.sgd_legacy(flat, flat, flat, flag, one, 0.9, False, 0.0)
    k.rmsprop_legacy(flat, flat, flat, flat, flag, one, 0.9, 1e-7, 0.0, 0.0)
    _launch_every_apply_kernel(k, flat, step, flag, one)
    k.scheduled_rate(_Shape((7,), "float64"), step, one)
    k.dropout_mask(a, 1, step, 0.5)
    half = _Shape((rows, cols), "bfloat16") if ml_dtypes else _Shape((rows, cols), "float16")
    k.cast(a, half)
    k.cast(half, a)
    k.accumulate(one, one, 2.0)
    k.guard_finite(one, step, flag, step)
    k.increment_step(step, flag)
    k.add_argmax_matches(a, labels, part, one)
    k.add_argmax_matches(a, a, part, one)
    k.add_threshold_matches(a, a, 0.5, part, one)
    k.add_abs_error("sigmoid", a, a, part, one)
    order = _Shape((rows,), "int64")
    k.gather_rows(a, order, step, a)
    k.advance(step, rows)
    assert rec.kernels == set(catalogue.kernels()), "a kernel this test does not launch"
    for entry, (blocks, threads), args in rec.launches:
        n = max(arg.size for arg in args if isinstance(arg, _Shape) and arg is not part)
        if blocks == 1 and threads == 1 or entry.startswith("dnn_reduce_partials"):
            assert n <= catalogue.REDUCE_BLOCKS, f"{entry} does O({n}) work in one block"
            continue
        if entry.startswith("dnn_segment_clip_scales"):  # a reduction's second pass
            assert n <= launch.MAX_CHUNKS + 8, f"{entry} adds {n} chunk sums"
            continue
        want = min(-(-n // threads), FEW_BLOCKS_PER_SM * H100_SMS)
        assert blocks >= want, f"{entry}: {blocks} blocks for {n} elements; want >= {want}"


def _launch_every_apply_kernel(k, flat, step, flag, one):
    """Each *_apply update, every feature of Keras' apply on, and the clip norms."""
    n = flat.size
    chunks = tuple(_Shape((len(t),), "int64") for t in launch.chunk_table([0, n // 2, n]))
    groups, segs = _Shape((n // reference.SEGMENT_GROUP,), "int32"), _Shape((2,))
    apply = launch.Apply(flat, 4, 0.5, segs, groups, segs, flat, 0.99, 3)
    k.sgd_apply(flat, flat, flat, step, flag, one, 0.9, True, apply)
    k.rmsprop_apply(flat, flat, flat, flat, flat, step, flag, one, 0.9, 1e-7, 0.9, apply)
    k.adam_apply(flat, flat, flat, flat, flat, step, flag, one, 0.9, 0.999, 1e-7, apply)
    k.nadam_apply(flat, flat, flat, flat, _Shape((2,), "float64"), step, flag, one, 0.9,
                  0.999, 1e-7, apply)
    k.adagrad_apply(flat, flat, flat, step, flag, one, 1e-7, apply)
    k.adamax_apply(flat, flat, flat, flat, step, flag, one, 0.9, 0.999, 1e-7, apply)
    k.lion_apply(flat, flat, flat, step, flag, one, 0.9, 0.99, apply)
    sums = _Shape((chunks[0].size - 1,))
    k.clip_scales(flat, flat, 4, step, chunks, sums, 1.0, False, segs)
    k.clip_scales(flat, None, 1, step, chunks, sums, 1.0, True, segs)


# ------------------------------------------------------------------ normalization
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(16, 5), (3, 300)])
def test_batch_norm_kernels_against_the_reference(k, dtype, rows, cols):
    x = inputs(dtype, (rows, cols))
    rng = numpy.random.default_rng(2)
    gamma, beta = (rng.normal(size=cols).astype(dtype) for _ in range(2))
    colsum = x.sum(axis=0, dtype=numpy.float64).astype(dtype)
    squares = k.center_square(x, colsum, numpy.empty_like(x))
    sum2 = squares.sum(axis=0, dtype=numpy.float64).astype(dtype)
    mean, var = numpy.empty(cols, dtype), numpy.empty(cols, dtype)
    mm, mv = numpy.zeros(cols, dtype), numpy.ones(cols, dtype)
    k.batch_stats(dtype, colsum, sum2, mean, var, mm, mv, rows, 0.9)
    y, xhat = numpy.empty_like(x), numpy.empty_like(x)
    k.column_affine(x, mean, var, gamma, beta, y, xhat, 1e-3)
    want_y, want_xhat, want_mean, want_var = reference.batch_norm(wide(x), wide(gamma),
                                                                  wide(beta), 1e-3)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else TOL[dtype]
    for got, want in ((mean, want_mean), (var, want_var), (y, want_y), (xhat, want_xhat),
                      (mm, reference.moving_average(0.0, want_mean, 0.9)),
                      (mv, reference.moving_average(1.0, want_var, 0.9))):
        numpy.testing.assert_allclose(got, want, **tol)
    dy = inputs(dtype, (rows, cols), seed=4) / 10
    dgamma = (dy.astype(numpy.float64) * xhat).sum(axis=0).astype(dtype)
    dbeta = dy.sum(axis=0, dtype=numpy.float64).astype(dtype)
    dx = k.batch_norm_backward(dy, xhat, gamma, var, dgamma, dbeta, numpy.empty_like(dy), 1e-3)
    want_dx, _, _ = reference.batch_norm_backward(wide(dy), want_xhat, wide(gamma), want_var,
                                                  1e-3)
    numpy.testing.assert_allclose(dx, want_dx, **tol)
    inference = k.column_affine(x, mm, mv, gamma, beta, numpy.empty_like(x), None, 1e-3)
    numpy.testing.assert_allclose(inference, reference.batch_norm_inference(
        wide(x), wide(gamma), wide(beta), wide(mm), wide(mv), 1e-3), **tol)
    standardized = k.column_affine(x, mean, var, None, None, numpy.empty_like(x), None,
                                   reference.NORMALIZATION_EPSILON, clamp=True)
    numpy.testing.assert_allclose(standardized, reference.standardize(wide(x), wide(mean),
                                                                      wide(var)), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(16, 5), (3, 300)])
def test_layer_norm_kernels_against_the_reference(k, dtype, rows, cols):
    x = inputs(dtype, (rows, cols))
    rng = numpy.random.default_rng(3)
    gamma, beta = (rng.normal(size=cols).astype(dtype) for _ in range(2))
    y, xhat, rstd = numpy.empty_like(x), numpy.empty_like(x), numpy.empty(rows, dtype)
    k.layer_norm(x, gamma, beta, y, xhat, rstd, 1e-3)
    want_y, want_xhat, want_rstd = reference.layer_norm(wide(x), wide(gamma), wide(beta), 1e-3)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else TOL[dtype]
    for got, want in ((y, want_y), (xhat, want_xhat), (rstd, want_rstd)):
        numpy.testing.assert_allclose(got, want, **tol)
    dy = inputs(dtype, (rows, cols), seed=5) / 10
    dx = k.layer_norm_backward(dy, xhat, gamma, rstd, dy.copy())
    want_dx, _, _ = reference.layer_norm_backward(wide(dy), want_xhat, wide(gamma), want_rstd)
    numpy.testing.assert_allclose(dx, want_dx, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_top_k_binary_count_and_histogram_kernels(k, dtype):
    rng = numpy.random.default_rng(8)
    scores = rng.normal(size=(300, 12)).astype(dtype)
    scores[7, :] = 0.0  # every class ties
    labels = rng.integers(0, 12, 300)
    onehot = numpy.eye(12, dtype=dtype)[labels]
    for kk in (1, 3, 12):
        total = numpy.zeros(1, dtype)
        k.add_top_k_matches(scores, labels, kk, partials(dtype), total)
        k.add_top_k_matches(scores, onehot, kk, partials(dtype), total)
        assert total[0] == 2 * reference.top_k_matches(scores, labels, kk)
    probs = rng.uniform(0, 1, (500, 1)).astype(dtype)
    probs[:5, 0] = [0.0, 1.0, 0.5, 1e-9, 0.25]  # on and beside the thresholds
    targets = rng.integers(0, 2, (500, 1)).astype(dtype)
    counts = numpy.zeros(3, dtype)
    k.add_binary_counts(probs, targets, 0.4, partials(dtype), counts)
    numpy.testing.assert_array_equal(counts, reference.binary_counts(probs, targets, 0.4))
    for m in (3, 200):
        histogram = numpy.zeros(2 * (m + 1), dtype)
        k.add_threshold_histogram("linear", probs, targets, m, histogram)
        positive, negative = reference.threshold_histogram(probs.astype(numpy.float64),
                                                           targets, m)
        numpy.testing.assert_array_equal(histogram, numpy.concatenate([positive, negative]))


SCHEDULES = [
    dnn.optimizers.schedules.ExponentialDecay(0.1, 7, 0.5),
    dnn.optimizers.schedules.ExponentialDecay(0.1, 7, 0.5, staircase=True),
    dnn.optimizers.schedules.PiecewiseConstantDecay([3, 10], [0.3, 0.2, 0.1]),
    dnn.optimizers.schedules.CosineDecay(0.1, 20, alpha=0.1),
    dnn.optimizers.schedules.CosineDecay(0.0, 20, warmup_target=0.2, warmup_steps=5),
    dnn.optimizers.schedules.PolynomialDecay(0.1, 10, 0.01, power=0.5),
    dnn.optimizers.schedules.PolynomialDecay(0.1, 10, 0.01, power=2.0, cycle=True),
    dnn.optimizers.schedules.InverseTimeDecay(0.1, 3, 0.5),
    dnn.optimizers.schedules.InverseTimeDecay(0.1, 3, 0.5, staircase=True),
    dnn.optimizers.schedules.CosineDecayRestarts(0.1, 5, alpha=0.1),
    dnn.optimizers.schedules.CosineDecayRestarts(0.1, 5, t_mul=1.0, m_mul=0.5),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_scheduled_rate_kernel_against_the_reference(k, dtype, schedule):
    encoded = schedule.encode()
    lr = numpy.zeros(1, dtype)
    for update in (1, 2, 3, 4, 5, 6, 8, 11, 12, 25, 26, 40, 10**6):
        k.scheduled_rate(encoded, numpy.array([update], numpy.int64), lr)
        want = reference.scheduled_rate(encoded, update - 1)  # the steps taken before it
        numpy.testing.assert_allclose(lr[0], want, rtol=1e-6 if dtype == "float32" else 1e-14)


# ------------------------------------------------------------------ odd launch sizes
# One element; a row shorter than its group of threads (3 columns: a group of 4); one
# column; rows that fill no whole block (257 rows of 4-thread groups); a row wider than
# the widest block (1500 columns, strided by 1024 threads).
ODD_SHAPES = [(1, 1), (1, 3), (3, 1), (257, 3), (2, 1500)]
ODD_FLAT = [1, 3, 5, 257, 1025]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=str)
def test_row_kernels_at_odd_sizes(k, dtype, shape):
    rows, cols = shape
    x = inputs(dtype, shape)
    rng = numpy.random.default_rng(rows * cols)
    bias, gamma, beta = (rng.normal(size=cols).astype(dtype) for _ in range(3))
    y = k.bias_activation(x, bias, "softmax", numpy.empty_like(x))
    close(y, reference.bias_activation("softmax", wide(x), wide(bias)), dtype)
    dy = inputs(dtype, shape, seed=1) / 10
    close(k.activation_backward("softmax", dy, None, y, numpy.empty_like(x)),
          reference.activation_backward("softmax", wide(dy), None, wide(y)), dtype)
    out, xhat, rstd = numpy.empty_like(x), numpy.empty_like(x), numpy.empty(rows, dtype)
    k.layer_norm(x, gamma, beta, out, xhat, rstd, 1e-3)
    want = reference.layer_norm(wide(x), wide(gamma), wide(beta), 1e-3)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else TOL[dtype]
    for got, expected in zip((out, xhat, rstd), want):
        numpy.testing.assert_allclose(got, expected, **tol)
    numpy.testing.assert_allclose(
        k.layer_norm_backward(dy, xhat, gamma, rstd, numpy.empty_like(x)),
        reference.layer_norm_backward(wide(dy), want[1], wide(gamma), want[2])[0], **tol)
    labels = rng.integers(0, cols, rows)
    for target in (labels, numpy.eye(cols, dtype=dtype)[labels]):
        grad, loss = numpy.empty_like(x), numpy.empty(1, dtype)
        k.softmax_cross_entropy(x, target, None, grad, partials(dtype), loss, 0.1)
        want_loss, want_grad = reference.softmax_cross_entropy(wide(x), target,
                                                               label_smoothing=0.1)
        close(loss[0], want_loss, dtype)
        close(grad, want_grad, dtype)
        total = numpy.zeros(1, dtype)
        k.add_argmax_matches(x, target, partials(dtype), total)
        k.add_top_k_matches(x, target, 2, partials(dtype), total)
        assert total[0] == reference.argmax_matches(x, labels) + \
            reference.top_k_matches(x, labels, 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=str)
def test_elementwise_and_column_kernels_at_odd_sizes(k, dtype, shape):
    rows, cols = shape
    x = inputs(dtype, shape) / 10
    rng = numpy.random.default_rng(rows + cols)
    t = rng.integers(0, 2, shape).astype(dtype)
    weights = rng.uniform(0, 2, rows).astype(dtype)
    for act in ("relu", "gelu"):
        bias = rng.normal(size=cols).astype(dtype)
        close(k.bias_activation(x, bias, act, numpy.empty_like(x)),
              reference.bias_activation(act, wide(x), wide(bias)), dtype)
    grad, loss = numpy.empty_like(x), numpy.empty(1, dtype)
    k.elementwise_loss("sigmoid_bce", x, t, weights, grad, partials(dtype), loss, 0.1)
    want_loss, want_grad = reference.sigmoid_binary_cross_entropy(
        wide(x), wide(t), weights=wide(weights), label_smoothing=0.1)
    close(loss[0], want_loss, dtype)
    close(grad, want_grad, dtype)
    total = numpy.array([0.5], dtype)
    k.add_regularization(x, None, 0.01, 0.02, partials(dtype), total)
    close(total[0], 0.5 + reference.regularization(wide(x), 0.01, 0.02)[0], dtype)
    counts, histogram = numpy.zeros(3, dtype), numpy.zeros(2 * 6, dtype)
    probs = rng.uniform(0, 1, shape).astype(dtype)
    k.add_binary_counts(probs, t, 0.5, partials(dtype), counts)
    numpy.testing.assert_array_equal(counts, reference.binary_counts(probs, t, 0.5))
    k.add_threshold_histogram("linear", probs, t, 5, histogram)
    numpy.testing.assert_array_equal(histogram, numpy.concatenate(
        reference.threshold_histogram(probs.astype(numpy.float64), t, 5)))
    colsum = x.sum(axis=0, dtype=numpy.float64).astype(dtype)
    squares = k.center_square(x, colsum, numpy.empty_like(x))
    close(squares, (wide(x) - wide(colsum) / rows) ** 2, dtype)
    mask = k.dropout_mask(numpy.empty(x.size, dtype), 5, numpy.array([2], numpy.int64), 0.3)
    numpy.testing.assert_array_equal(mask, reference.dropout_mask(x.size, 0.3, 5, 2, dtype))
    order = numpy.arange(rows, dtype=numpy.int64)[::-1].copy()
    gathered = k.gather_rows(x, order, numpy.zeros(1, numpy.int64), numpy.empty_like(x))
    numpy.testing.assert_array_equal(gathered, x[::-1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", ODD_FLAT)
def test_sum_and_optimizer_kernels_at_odd_sizes(k, dtype, n):
    x = inputs(dtype, (n,)) / 100
    out = k.sum(x, partials(dtype), numpy.empty(1, dtype))
    numpy.testing.assert_allclose(out[0], wide(x).sum(), atol=numpy.abs(wide(x)).sum() * (
        1e-6 if dtype == "float32" else 1e-14))
    p, g = _flat(dtype, n, seed=n)
    m, v, step = numpy.zeros_like(p), numpy.zeros_like(p), numpy.ones(1, numpy.int64)
    want = reference.adam(wide(p), wide(g), 0.0, 0.0, 1, 1e-3, 0.9, 0.999, 1e-7)
    k.adam(p, g, m, v, step, None, rate(1e-3, dtype), 0.9, 0.999, 1e-7, 0.0, False)
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=1e-4, atol=1e-6)
    for got, expected in zip((p, m, v), want):
        numpy.testing.assert_allclose(got, expected, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_target_row_without_a_maximum_matches_nothing_and_reads_nothing_past_it(k, dtype):
    """A NaN target row has no argmax (the kernel's row_argmax gives cols): top-k must
    not read the score at column cols, the first one past the row. The scores sit in a
    longer buffer whose next value is +inf, which would count the row in (no score
    exceeds +inf) if it were read."""
    rows, cols = 9, 5
    rng = numpy.random.default_rng(4)
    buffer = numpy.full(rows * cols + 1, numpy.inf, dtype)
    scores = buffer[:-1].reshape(rows, cols)
    scores[...] = rng.normal(size=(rows, cols))
    labels = rng.integers(0, cols, rows)
    targets = numpy.eye(cols, dtype=dtype)[labels]
    targets[-1] = numpy.nan
    scores[-2] = numpy.nan  # a NaN score row too: its argmax is cols, like its target's
    targets[-2] = numpy.nan
    for kk in (1, 3):
        total = numpy.zeros(1, dtype)
        k.add_top_k_matches(scores, targets, kk, partials(dtype), total)
        assert total[0] == reference.top_k_matches(scores[:-2], labels[:-2], kk)
    total = numpy.zeros(1, dtype)
    k.add_argmax_matches(scores, targets, partials(dtype), total)
    assert total[0] == reference.argmax_matches(scores[:-2], labels[:-2])
