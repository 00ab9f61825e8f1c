"""The kernels of Keras's options (issue 19), built for the host from the CUDA source and
run through the launchers the CuPy backend calls, against kernels/reference.py on random
and extreme inputs: leaky ReLU's slope, the normalization layers' center, scale,
rms_scaling and invert, sparse cross-entropy's ignore_class, the metrics' per-row
weights, and precision's top_k and class_id."""
import numpy
import pytest

from dnn.kernels import catalogue, host, reference
from dnn.kernels.launch import FusedKernels

DTYPES = ["float32", "float64"]
TOL = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-13)}


@pytest.fixture(scope="module")
def k():
    if host.compiler() is None:
        pytest.skip("no C++ compiler")
    return FusedKernels(host.HostRuntime())


def inputs(dtype, shape, seed=0):
    rng = numpy.random.default_rng(seed)
    x = rng.normal(0, 3, shape)
    extremes = [0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 1e4, -1e4]
    flat = x.reshape(-1)
    flat[:min(flat.size, len(extremes))] = extremes[:flat.size]
    return numpy.ascontiguousarray(x.astype(dtype))


def wide(a):
    return None if a is None else numpy.array(a, dtype=numpy.float64)


def partials(dtype):
    return numpy.full(catalogue.REDUCE_BLOCKS, numpy.nan, dtype)  # poisoned


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", [0.0, 0.01, 0.3, 1.0])
def test_leaky_relu_kernels_take_the_slope(k, dtype, slope):
    x = inputs(dtype, (7, 9))
    bias = inputs(dtype, (9,), seed=1) / 10
    y = k.bias_activation(x, bias, "leaky_relu", numpy.empty_like(x), slope)
    want = reference.bias_activation("leaky_relu", wide(x), wide(bias), negative_slope=slope)
    numpy.testing.assert_allclose(y, want, **TOL[dtype])
    dy = inputs(dtype, (7, 9), seed=2)
    dx = k.activation_backward("leaky_relu", dy, None, y, numpy.empty_like(dy), slope)
    numpy.testing.assert_allclose(dx, reference.activation_backward(
        "leaky_relu", wide(dy), None, wide(y), negative_slope=slope), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False),
                                          (False, False)])
def test_layer_norm_kernels_without_gamma_or_beta(k, dtype, center, scale):
    x = inputs(dtype, (9, 6))
    rng = numpy.random.default_rng(3)
    gamma = rng.normal(size=6).astype(dtype) if scale else None
    beta = rng.normal(size=6).astype(dtype) if center else None
    y, xhat, rstd = numpy.empty_like(x), numpy.empty_like(x), numpy.empty(9, dtype)
    k.layer_norm(x, gamma, beta, y, xhat, rstd, 1e-3)
    want_y, want_xhat, want_rstd = reference.layer_norm(wide(x), wide(gamma), wide(beta),
                                                        1e-3)
    for got, want in ((y, want_y), (xhat, want_xhat), (rstd, want_rstd)):
        numpy.testing.assert_allclose(got, want, **TOL[dtype])
    dy = inputs(dtype, (9, 6), seed=4) / 10
    dx = k.layer_norm_backward(dy, xhat, gamma, rstd, dy.copy())
    want_dx, _, _ = reference.layer_norm_backward(wide(dy), want_xhat, wide(gamma), want_rstd)
    numpy.testing.assert_allclose(dx, want_dx, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(9, 6), (3, 300)])
@pytest.mark.parametrize("scale", [True, False])
def test_rms_scaling_kernels(k, dtype, rows, cols, scale):
    x = inputs(dtype, (rows, cols)) + 2
    gamma = numpy.random.default_rng(5).normal(size=cols).astype(dtype) if scale else None
    y, xhat = numpy.empty_like(x), numpy.empty_like(x)
    rstd, shift = numpy.empty(rows, dtype), numpy.empty(rows, dtype)
    k.layer_norm(x, gamma, None, y, xhat, rstd, 1e-3, shift)
    want = reference.rms_scaling(wide(x), wide(gamma), 1e-3)
    for got, expected in zip((y, xhat, rstd, shift), want):
        numpy.testing.assert_allclose(got, expected, **TOL[dtype])
    dy = inputs(dtype, (rows, cols), seed=6) / 10
    dx = k.layer_norm_backward(dy, xhat, gamma, rstd, dy.copy(), shift)
    want_dx, _ = reference.rms_scaling_backward(wide(dy), want[1], wide(gamma), want[2],
                                                want[3])
    numpy.testing.assert_allclose(dx, want_dx, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [True, False])
def test_batch_norm_backward_kernel_without_gamma(k, dtype, batch):
    x = inputs(dtype, (16, 5))
    _, xhat, _, var = reference.batch_norm(wide(x), None, None, 1e-3)
    xhat, var = xhat.astype(dtype), var.astype(dtype)
    dy = inputs(dtype, (16, 5), seed=7) / 10
    dgamma = (wide(dy) * xhat).sum(0).astype(dtype)
    dbeta = wide(dy).sum(0).astype(dtype)
    dx = k.batch_norm_backward(dy, xhat, None, var, dgamma, dbeta, numpy.empty_like(dy), 1e-3,
                               batch)
    want, _, _ = reference.batch_norm_backward(wide(dy), wide(xhat), None, wide(var), 1e-3,
                                               batch=batch)
    numpy.testing.assert_allclose(dx, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_column_affine_kernel_inverts_normalization(k, dtype):
    x = inputs(dtype, (8, 4))
    mean = numpy.array([1.0, -2.0, 0.0, 5.0], dtype)
    variance = numpy.array([4.0, 0.25, 0.0, 1e-20], dtype)  # a constant feature, a tiny one
    y = k.column_affine(x, mean, variance, None, None, numpy.empty_like(x), None,
                        reference.NORMALIZATION_EPSILON, clamp=True, invert=True)
    numpy.testing.assert_allclose(y, reference.unstandardize(wide(x), wide(mean),
                                                             wide(variance)), **TOL[dtype])
    dx = k.column_affine(x, None, variance, None, None, numpy.empty_like(x), None,
                         reference.NORMALIZATION_EPSILON, clamp=True, invert=True)
    numpy.testing.assert_allclose(dx, reference.unstandardize_backward(wide(x),
                                                                      wide(variance)),
                                  **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(9, 5), (700, 3), (3, 300)])
@pytest.mark.parametrize("ignore,weighted", [(2, False), (-1, True), (255, True)])
def test_sparse_cross_entropy_kernel_ignores_a_class(k, dtype, rows, cols, ignore, weighted):
    z = inputs(dtype, (rows, cols))
    rng = numpy.random.default_rng(rows)
    labels = rng.integers(0, cols, rows)
    labels[::2] = ignore
    weights = rng.uniform(0, 2, rows).astype(dtype) if weighted else None
    grad, loss, valid = numpy.empty_like(z), numpy.empty(1, dtype), numpy.empty(1, dtype)
    k.softmax_cross_entropy(z, labels, weights, grad, partials(dtype), loss, 0.0,
                            (ignore, valid))
    want_loss, want_grad = reference.softmax_cross_entropy(wide(z), labels,
                                                           weights=wide(weights),
                                                           ignore_class=ignore)
    assert valid[0] == (labels != ignore).sum()
    numpy.testing.assert_allclose(loss[0], want_loss, **TOL[dtype])
    numpy.testing.assert_allclose(grad, want_grad, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_metric_kernels_weight_each_row(k, dtype):
    rng = numpy.random.default_rng(9)
    scores = inputs(dtype, (300, 6)) / 3
    labels = rng.integers(0, 6, 300)
    targets = rng.integers(0, 2, (300, 6)).astype(dtype)
    weights = rng.uniform(0, 2, 300).astype(dtype)
    tol = TOL[dtype]

    def total():
        return numpy.array([0.25], dtype)  # a running total from earlier batches

    got = k.add_argmax_matches(scores, labels, partials(dtype), total(), weights)
    numpy.testing.assert_allclose(got[0], 0.25 + reference.argmax_matches(
        wide(scores), labels, weights=wide(weights)), **tol)
    got = k.add_threshold_matches(scores, targets, 0.1, partials(dtype), total(), weights)
    numpy.testing.assert_allclose(got[0], 0.25 + reference.threshold_matches(
        wide(scores), wide(targets), 0.1, weights=wide(weights)), **tol)
    got = k.add_top_k_matches(scores, labels, 3, partials(dtype), total(), weights)
    numpy.testing.assert_allclose(got[0], 0.25 + reference.top_k_matches(
        wide(scores), labels, 3, weights=wide(weights)), **tol)
    for act in ("linear", "sigmoid"):
        got = k.add_abs_error(act, scores, targets, partials(dtype), total(), weights)
        numpy.testing.assert_allclose(got[0], 0.25 + reference.abs_error(
            wide(scores), wide(targets), act, weights=wide(weights)), **tol)
    counts = k.add_binary_counts(scores, targets, 0.2, partials(dtype), numpy.zeros(3, dtype),
                                 weights)
    numpy.testing.assert_allclose(counts, reference.binary_counts(
        wide(scores), wide(targets), 0.2, weights=wide(weights)), **tol)
    pair = k.add_binary_counts(scores, targets, 0.2, partials(dtype), numpy.zeros(2, dtype),
                               None, which=(2, 0))
    want = reference.binary_counts(wide(scores), wide(targets), 0.2)
    numpy.testing.assert_array_equal(pair, [want[2], want[0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_histogram_kernel_weights_and_soft_targets(k, dtype):
    """Keras counts a target as positive when it is not 0: soft targets too."""
    rng = numpy.random.default_rng(10)
    probs = rng.uniform(0, 1, (400, 2)).astype(dtype)
    probs[:4, 0] = [0.0, 1.0, 0.5, 1e-9]
    targets = rng.choice([0.0, 0.3, 1.0], (400, 2)).astype(dtype)
    # Quarters add up exactly in any order. The kernel's atomics add a bin's weights in
    # the order its threads run (a GPU's too, so weighted sums may differ in the last
    # bit from run to run); the host build runs them in three orders and wants the
    # same bytes.
    weights = (rng.integers(0, 9, 400) / 4).astype(dtype)
    for m in (3, 200):
        counts = numpy.zeros(2 * (m + 1), dtype)
        k.add_threshold_histogram("linear", probs, targets, m, counts, weights)
        positive, negative = reference.threshold_histogram(wide(probs), targets, m,
                                                           weights=wide(weights))
        numpy.testing.assert_allclose(counts, numpy.concatenate([positive, negative]),
                                      **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("top_k,class_id", [(None, 2), (1, None), (3, None), (2, 4), (6, 0)])
@pytest.mark.parametrize("activation", ["linear", "sigmoid", "softmax"])
def test_select_scores_kernel(k, dtype, top_k, class_id, activation):
    rng = numpy.random.default_rng(11)
    scores = inputs(dtype, (50, 6))
    scores[3] = 1.0  # all tied: the lower indices are the top k
    scores[4, :3] = 2.0
    targets = rng.integers(0, 2, (50, 6)).astype(dtype)
    width = 1 if class_id is not None else 6
    out, out_t = numpy.empty((50, width), dtype), numpy.empty((50, width), dtype)
    k.select_scores(scores, targets, out, out_t, top_k, class_id, activation)
    want, want_t = reference.select_scores(wide(scores), wide(targets), top_k, class_id,
                                           activation)
    numpy.testing.assert_allclose(out, want, **TOL[dtype])
    numpy.testing.assert_array_equal(out_t, want_t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_kernel_adds_to_a_total(k, dtype):
    x = inputs(dtype, (1000,)) / 100
    total = numpy.array([2.0], dtype)
    k.sum(x, partials(dtype), total, add=True)
    scale = numpy.abs(wide(x)).sum()  # cancellation: compare with the summands' size
    numpy.testing.assert_allclose(total[0], 2.0 + wide(x).sum(),
                                  atol=scale * (1e-6 if dtype == "float32" else 1e-14))
