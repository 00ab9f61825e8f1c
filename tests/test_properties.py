"""Property tests: random shapes (size 1 and odd sizes included) and extreme values,
against float64 NumPy references, with every warning turned into an error."""
import warnings

import numpy
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_backend_ops import ref_act

from dnn.kernels import reference

ACTS = ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "softmax"]
shapes = st.tuples(st.integers(1, 9), st.integers(1, 9))
EXTREMES = [0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 100.0, -100.0, 1e4, -1e4]
floats = st.one_of(st.floats(-50, 50, width=32), st.sampled_from(EXTREMES))


def matrices(shape_strategy=shapes, elements=floats):
    return shape_strategy.flatmap(lambda s: arrays(numpy.float32, s, elements=elements))


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


def close(got, want, rtol=2e-5, atol=1e-6):
    got = numpy.asarray(got, dtype=numpy.float64)
    assert numpy.isfinite(got).all()
    numpy.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ACTS)
@given(x=matrices())
def test_activation_forward(backend, name, x):
    got = backend.to_numpy(quiet(backend.activation, name, backend.asarray(x.copy())))
    with numpy.errstate(over="ignore"):
        want = ref_act(name, x)
    close(got, want, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("name", ACTS)
@given(x=matrices(), seed=st.integers(0, 2**16))
def test_activation_backward_is_finite_and_matches(backend, name, x, seed):
    dy = numpy.random.default_rng(seed).normal(size=x.shape).astype(numpy.float32)
    xd = backend.asarray(x.copy())
    y = quiet(backend.activation, name, xd)
    got = backend.to_numpy(quiet(backend.activation_backward, name, backend.asarray(dy), xd, y))
    assert numpy.isfinite(got).all()
    x64, dy64 = x.astype(numpy.float64), dy.astype(numpy.float64)
    with numpy.errstate(over="ignore", invalid="ignore"):
        want = reference.activation_backward(name, dy64, x64, ref_act(name, x64))
    close(got, want, rtol=1e-4, atol=1e-5)


@given(z=matrices(), seed=st.integers(0, 2**16), one_hot=st.booleans())
def test_softmax_cross_entropy_property(backend, z, seed, one_hot):
    rng = numpy.random.default_rng(seed)
    labels = rng.integers(0, z.shape[1], z.shape[0])
    target = numpy.eye(z.shape[1], dtype=numpy.float32)[labels] if one_hot else labels
    loss, grad = quiet(backend.softmax_cross_entropy, backend.asarray(z.copy()),
                       backend.asarray(target))
    want_loss, want_grad = reference.softmax_cross_entropy(z.astype(numpy.float64), labels)
    close(backend.to_float(loss), want_loss, rtol=1e-4, atol=1e-4)
    close(backend.to_numpy(grad), want_grad, rtol=1e-4, atol=1e-6)


@given(z=matrices(), seed=st.integers(0, 2**16))
def test_sigmoid_bce_property(backend, z, seed):
    t = numpy.random.default_rng(seed).integers(0, 2, z.shape).astype(numpy.float32)
    loss, grad = quiet(backend.sigmoid_binary_cross_entropy, backend.asarray(z.copy()),
                       backend.asarray(t))
    want_loss, want_grad = reference.sigmoid_binary_cross_entropy(z.astype(numpy.float64), t)
    close(backend.to_float(loss), want_loss, rtol=1e-4, atol=1e-4)
    close(backend.to_numpy(grad), want_grad, rtol=1e-4, atol=1e-7)


@given(p=matrices(elements=st.sampled_from([0.0, 1.0, 0.5, 1e-7, 1 - 1e-7])),
       seed=st.integers(0, 2**16))
def test_mse_at_probability_edges(backend, p, seed):
    t = numpy.random.default_rng(seed).integers(0, 2, p.shape).astype(numpy.float32)
    loss, grad = quiet(backend.mean_squared_error, backend.asarray(p.copy()), backend.asarray(t))
    want_loss, want_grad = reference.mean_squared_error(p.astype(numpy.float64), t)
    close(backend.to_float(loss), want_loss)
    close(backend.to_numpy(grad), want_grad)


@given(x=matrices())
def test_reductions_property(backend, x):
    xd = backend.asarray(x.copy())
    x64 = x.astype(numpy.float64)
    close(backend.to_numpy(quiet(backend.column_sum, xd)), x64.sum(0), rtol=1e-5, atol=1e-3)


@given(n=st.integers(1, 300), seed=st.integers(0, 2**16),
       lr=st.sampled_from([1e-4, 1e-3, 0.1]), decoupled=st.booleans())
def test_adam_property(backend, n, seed, lr, decoupled):
    rng = numpy.random.default_rng(seed)
    p = rng.normal(size=n).astype(numpy.float32)
    g = (rng.normal(size=n) * rng.choice([1e-8, 1.0, 1e4], n)).astype(numpy.float32)
    pd, md, vd = backend.asarray(p.copy()), backend.zeros((n,)), backend.zeros((n,))
    step = backend.asarray(numpy.ones(1, numpy.int64))  # the first update
    rate = backend.asarray(numpy.array([lr], numpy.float32))
    quiet(backend.adam_update, pd, backend.asarray(g.copy()), md, vd, step, rate, 0.9, 0.999, 1e-7,
          weight_decay=0.01, decoupled_weight_decay=decoupled)
    want, _, _ = reference.adam(p.astype(numpy.float64), g.astype(numpy.float64), 0.0, 0.0, 1,
                                lr, 0.9, 0.999, 1e-7, 0.01, decoupled)
    close(backend.to_numpy(pd), want, rtol=1e-5, atol=1e-6)
