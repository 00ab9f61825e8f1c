"""Every backend op against a float64 NumPy reference, including extreme inputs."""
import inspect
import math
import warnings

import numpy
import pytest

from dnn import backends
from dnn.backends.base import Backend
from dnn.kernels import reference

ACTS = ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "softmax"]


def ref_act(name, x):
    """The reference in float64 (overflow in exp is expected at the extremes)."""
    with numpy.errstate(over="ignore"):
        return reference.activation(name, x.astype(numpy.float64))


@pytest.mark.parametrize("name,x,want", [
    ("sigmoid", [0.0, 2.0, -800.0], [0.5, 0.8807970779778823, 0.0]),
    ("tanh", [1.0], [0.7615941559557649]),
    # x Phi(x), Phi the normal CDF: Phi(1) = 0.8413447460685429
    ("gelu", [1.0, -1.0], [0.8413447460685429, -0.15865525393145707]),
    ("gelu_tanh", [1.0, -1.0], [0.8411919906082768, -0.15880800939172324]),
    ("leaky_relu", [-2.0, 3.0], [-0.4, 3.0]),  # Keras's slope for the name: 0.2
    ("relu", [-2.0, 3.0], [0.0, 3.0]),
])
def test_reference_activations_at_known_values(name, x, want):
    numpy.testing.assert_allclose(ref_act(name, numpy.array([x]))[0], want, rtol=1e-12)


def test_reference_softmax_and_cross_entropy_at_known_values():
    z = numpy.array([[0.0, math.log(3.0)]])
    numpy.testing.assert_allclose(ref_act("softmax", z), [[0.25, 0.75]])
    loss, grad = reference.softmax_cross_entropy(z, numpy.array([1]))
    numpy.testing.assert_allclose([loss, *grad[0]], [-math.log(0.75), 0.25, -0.25])
    loss, grad = reference.sigmoid_binary_cross_entropy(numpy.array([[0.0]]),
                                                        numpy.array([[1.0]]))
    numpy.testing.assert_allclose([loss, grad[0, 0]], [math.log(2.0), -0.5])


def test_reference_adam_first_step_moves_each_weight_by_the_learning_rate():
    """With zero moments, step 1 of Adam is lr * sign(g) wherever |g| >> epsilon."""
    g = numpy.array([3.0, -0.5, 0.1])
    p, m, v = reference.adam(numpy.zeros(3), g, numpy.zeros(3), numpy.zeros(3), 1, 0.01)
    numpy.testing.assert_allclose(p, -0.01 * numpy.sign(g), rtol=1e-4)
    numpy.testing.assert_allclose([m, v], [0.1 * g, 0.001 * g * g])


def numeric_vjp(name, x, dy, eps=1e-6):
    """Central-difference vector-Jacobian product in float64."""
    x = x.astype(numpy.float64)
    out = numpy.zeros_like(x)
    for idx in numpy.ndindex(*x.shape):
        xp_, xm = x.copy(), x.copy()
        xp_[idx] += eps
        xm[idx] -= eps
        out[idx] = ((ref_act(name, xp_) - ref_act(name, xm)) * dy).sum() / (2 * eps)
    return out


def rate(be, value):
    """A learning rate as the updates read it: a (1,) device array."""
    return be.asarray(numpy.array([value]))


def dev(be, a, dtype=None):
    """A device copy: NumPy's asarray would alias the host array that the reference reads."""
    return be.asarray(numpy.array(a, copy=True), dtype=dtype)


@pytest.mark.parametrize("name", ACTS)
def test_activation_forward_matches_reference(backend, rng, name):
    x = rng.normal(0, 3, (7, 5)).astype(numpy.float32)
    got = backend.to_numpy(backend.activation(name, dev(backend, x)))
    numpy.testing.assert_allclose(got, ref_act(name, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ACTS)
def test_activation_backward_matches_finite_differences(backend, rng, name):
    x = rng.normal(0, 1.5, (4, 3))
    x[numpy.abs(x) < 1e-3] = 0.5  # keep away from the relu kink
    dy = rng.normal(0, 1, x.shape)
    xd = dev(backend, x)
    y = backend.activation(name, xd)
    got = backend.to_numpy(backend.activation_backward(name, dev(backend, dy), xd, y))
    numpy.testing.assert_allclose(got, numeric_vjp(name, x, dy), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ACTS)
def test_backward_may_write_into_upstream_gradient(backend, rng, name):
    x = rng.normal(0, 1, (6, 4)).astype(numpy.float32)
    dy = rng.normal(0, 1, x.shape).astype(numpy.float32)
    xd = dev(backend, x)
    y = backend.activation(name, xd)
    expected = backend.to_numpy(backend.activation_backward(name, dev(backend, dy), xd, y))
    buf = dev(backend, dy.copy())
    out = backend.activation_backward(name, buf, xd, y, out=buf)
    numpy.testing.assert_allclose(backend.to_numpy(out), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ACTS)
def test_bias_activation_fuses_bias(backend, rng, name):
    x = rng.normal(0, 1, (5, 6)).astype(numpy.float32)
    b = rng.normal(0, 1, 6).astype(numpy.float32)
    buf = dev(backend, x.copy())  # NumPy's asarray aliases host memory
    got = backend.bias_activation(buf, dev(backend, b), name, out=buf)
    numpy.testing.assert_allclose(backend.to_numpy(got), ref_act(name, x + b), rtol=1e-5,
                                  atol=1e-6)


@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activations_are_stable_at_extreme_logits(backend, name, dtype):
    x = numpy.array([[-1e4, -100.0, 0.0, 100.0, 1e4]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = backend.to_numpy(backend.activation(name, dev(backend, x)))
        dx = backend.activation_backward(name, dev(backend, numpy.ones_like(x)),
                                         dev(backend, x), dev(backend, y))
    assert numpy.isfinite(y).all() and numpy.isfinite(backend.to_numpy(dx)).all()
    if name == "sigmoid":
        assert y[0, 0] == 0.0 and y[0, -1] == 1.0
    if name == "softmax":
        numpy.testing.assert_allclose(y.sum(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_transpose_flags(backend, rng, trans_a, trans_b):
    a = rng.normal(size=(3, 5) if not trans_a else (5, 3)).astype(numpy.float32)
    b = rng.normal(size=(5, 4) if not trans_b else (4, 5)).astype(numpy.float32)
    ref = (a.T if trans_a else a).astype(numpy.float64) @ (b.T if trans_b else b)
    out = backend.empty((3, 4), "float32")
    got = backend.gemm(dev(backend, a), dev(backend, b), out=out, trans_a=trans_a,
                       trans_b=trans_b)
    assert got is out
    numpy.testing.assert_allclose(backend.to_numpy(out), ref, rtol=1e-5, atol=1e-5)


def test_reductions(backend, rng):
    x = rng.normal(0, 10, (6, 7))
    xd = dev(backend, x)
    for axis in (0, 1, None):
        numpy.testing.assert_allclose(backend.to_numpy(backend.sum(xd, axis=axis)), x.sum(axis))
    numpy.testing.assert_allclose(backend.to_numpy(backend.column_sum(xd)), x.sum(0))


@pytest.mark.parametrize("one_hot", [False, True])
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_softmax_cross_entropy(backend, rng, one_hot, scale):
    z = rng.normal(0, 1, (8, 5)) * scale
    labels = rng.integers(0, 5, 8)
    target = numpy.eye(5)[labels] if one_hot else labels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = backend.softmax_cross_entropy(dev(backend, z), dev(backend, target))
    ref_loss, ref_grad = reference.softmax_cross_entropy(z, target)
    numpy.testing.assert_allclose(backend.to_float(loss), ref_loss, rtol=1e-7)
    numpy.testing.assert_allclose(backend.to_numpy(grad), ref_grad, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_sigmoid_binary_cross_entropy(backend, rng, scale):
    z = rng.normal(0, 1, (9, 2)) * scale
    t = rng.integers(0, 2, (9, 2)).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = backend.sigmoid_binary_cross_entropy(dev(backend, z), dev(backend, t))
    ref_loss, ref_grad = reference.sigmoid_binary_cross_entropy(z, t)
    numpy.testing.assert_allclose(backend.to_float(loss), ref_loss, rtol=1e-7)
    numpy.testing.assert_allclose(backend.to_numpy(grad), ref_grad, atol=1e-12)


def test_mean_squared_error(backend, rng):
    p, t = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    loss, grad = backend.mean_squared_error(dev(backend, p), dev(backend, t))
    ref_loss, ref_grad = reference.mean_squared_error(p, t)
    numpy.testing.assert_allclose(backend.to_float(loss), ref_loss)
    numpy.testing.assert_allclose(backend.to_numpy(grad), ref_grad)


@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.01, False), (0.01, True)])
def test_adam_update_over_three_steps(backend, rng, wd, decoupled):
    n = 37
    p = rng.normal(size=n)
    m, v = numpy.zeros(n), numpy.zeros(n)
    pd, md, vd = dev(backend, p), dev(backend, m), dev(backend, v)
    step = backend.zeros((1,), "int64")
    for t in range(1, 4):
        g = rng.normal(size=n)
        backend.increment_step(step)  # the update reads the 1-based step; it never counts
        backend.adam_update(pd, dev(backend, g), md, vd, step, rate(backend, 0.01), 0.9, 0.999,
                            1e-7, weight_decay=wd, decoupled_weight_decay=decoupled)
        p, m, v = reference.adam(p, g, m, v, t, 0.01, 0.9, 0.999, 1e-7, wd, decoupled)
    assert int(backend.to_numpy(step)[0]) == 3
    numpy.testing.assert_allclose(backend.to_numpy(pd), p, rtol=1e-12)
    numpy.testing.assert_allclose(backend.to_numpy(md), m, rtol=1e-12)
    numpy.testing.assert_allclose(backend.to_numpy(vd), v, rtol=1e-12)


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                  (0.9, True, 0.01), (0.5, False, 0.1)])
def test_sgd_update(backend, rng, momentum, nesterov, wd):
    n = 11
    p = rng.normal(size=n)
    buf = numpy.zeros(n)
    pd, bd = dev(backend, p), dev(backend, buf) if momentum else None
    for _ in range(3):
        g = rng.normal(size=n)
        backend.sgd_update(pd, dev(backend, g), bd, rate(backend, 0.1), momentum=momentum,
                           nesterov=nesterov, weight_decay=wd)
        p, buf = reference.sgd(p, g, buf, 0.1, momentum, nesterov, wd)
    numpy.testing.assert_allclose(backend.to_numpy(pd), p, rtol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_rmsprop_update(backend, rng, momentum):
    n = 13
    p = rng.normal(size=n)
    sq, vel = numpy.zeros(n), numpy.zeros(n)
    pd, sd, vd = dev(backend, p), dev(backend, sq), dev(backend, vel)
    for _ in range(3):
        g = rng.normal(size=n)
        backend.rmsprop_update(pd, dev(backend, g), sd, rate(backend, 0.01), rho=0.9, epsilon=1e-7,
                               momentum=momentum, velocity=vd if momentum else None)
        p, sq, vel = reference.rmsprop(p, g, sq, vel, 0.01, 0.9, 1e-7, momentum)
    numpy.testing.assert_allclose(backend.to_numpy(pd), p, rtol=1e-12)


def test_gradient_clipping(backend):
    g = dev(backend, numpy.array([3.0, 4.0, 0.0]))
    backend.clip_by_global_norm(g, 1.0)
    numpy.testing.assert_allclose(backend.to_numpy(g), [0.6, 0.8, 0.0])
    g = dev(backend, numpy.array([3.0, 4.0]))
    backend.clip_by_global_norm(g, 10.0)
    numpy.testing.assert_allclose(backend.to_numpy(g), [3.0, 4.0])
    g = dev(backend, numpy.array([-5.0, 0.2, 7.0]))
    backend.clip_by_value(g, 1.0)
    numpy.testing.assert_allclose(backend.to_numpy(g), [-1.0, 0.2, 1.0])


def test_dropout_mask_rows_at_an_offset_are_those_rows_of_the_whole_mask(backend):
    whole = backend.to_numpy(backend.dropout_mask((50, 40), 0.3, seed=7, counter=3))
    part = backend.to_numpy(backend.dropout_mask((20, 40), 0.3, seed=7, counter=3,
                                                 offset=30 * 40))
    numpy.testing.assert_array_equal(part, whole[30:])


def test_dropout_mask_is_a_function_of_seed_and_counter(backend):
    a = backend.to_numpy(backend.dropout_mask((50, 40), 0.3, seed=7, counter=3))
    b = backend.to_numpy(backend.dropout_mask((50, 40), 0.3, seed=7, counter=3))
    c = backend.to_numpy(backend.dropout_mask((50, 40), 0.3, seed=7, counter=4))
    numpy.testing.assert_array_equal(a, b)
    assert not numpy.array_equal(a, c)
    assert set(numpy.unique(a)) <= {0.0, numpy.float32(1 / 0.7)}
    assert 0.25 < (a == 0).mean() < 0.35


def test_allocation_and_transfer(backend):
    e = backend.empty((2, 3), "float32")
    z = backend.zeros((2, 3), "float64")
    assert tuple(e.shape) == (2, 3) and str(e.dtype) == "float32"
    numpy.testing.assert_array_equal(backend.to_numpy(z), numpy.zeros((2, 3)))
    a = backend.asarray(numpy.arange(6.0).reshape(2, 3).T, dtype="float32")
    assert a.flags.c_contiguous
    host = backend.to_numpy(a)
    assert isinstance(host, numpy.ndarray)
    numpy.testing.assert_array_equal(host, numpy.arange(6.0).reshape(2, 3).T)
    backend.synchronize()


def test_take_rows(backend, rng):
    x = rng.normal(size=(10, 3)).astype(numpy.float32)
    idx = numpy.array([9, 0, 4])
    out = backend.empty((3, 3), "float32")
    backend.take_rows(dev(backend, x), dev(backend, idx), out=out)
    numpy.testing.assert_array_equal(backend.to_numpy(out), x[idx])


def _public_methods(cls):
    return {name: getattr(cls, name) for name in dir(cls)
            if not name.startswith("_") and callable(getattr(cls, name))}


@pytest.mark.parametrize("cls_name", ["NumpyBackend", "CupyBackend"])
def test_backends_keep_the_base_signatures(cls_name):
    """A backend may override a method but not add public ones or change signatures
    (names, defaults and parameter kinds)."""
    if cls_name == "CupyBackend":
        from dnn.backends.cupy_backend import CupyBackend as cls
    else:
        cls = getattr(backends, cls_name)
    base = _public_methods(Backend)
    for name, method in _public_methods(cls).items():
        assert name in base, f"{cls_name}.{name} is not part of the Backend interface"
        if name in ("__init__",):
            continue
        got = inspect.signature(method).parameters
        want = inspect.signature(base[name]).parameters
        assert [(p.name, p.kind, p.default) for p in got.values()] == \
            [(p.name, p.kind, p.default) for p in want.values()], name
