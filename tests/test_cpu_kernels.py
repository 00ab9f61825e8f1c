"""The numba CPU kernels (kernels/cpu.py) against the NumPy references, at sizes where
the NumPy backend uses them."""
import numpy
import pytest
from dnn.backends import NumpyBackend
from dnn.kernels import cpu, reference

pytestmark = pytest.mark.skipif(not cpu.available(), reason="numba is not installed")
N = cpu.MIN_SIZE + 3


def _flat(seed, dtype="float32"):
    rng = numpy.random.default_rng(seed)
    g = rng.normal(size=N) * rng.choice([1e-8, 1.0, 1e4], N)
    return rng.normal(size=N).astype(dtype), g.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.01, False), (0.01, True)])
def test_numba_adam(dtype, wd, decoupled):
    be = NumpyBackend(accelerate=True)
    p, g = _flat(0, dtype)
    ref = (p.astype(numpy.float64), numpy.zeros(N), numpy.zeros(N))
    m, v, step = numpy.zeros(N, dtype), numpy.zeros(N, dtype), numpy.zeros(1, numpy.int64)
    for t in (1, 2):
        be.increment_step(step)
        be.adam_update(p, g.copy(), m, v, step, numpy.array([1e-3], dtype), weight_decay=wd,
                       decoupled_weight_decay=decoupled)
        ref = reference.adam(ref[0], g.astype(numpy.float64), ref[1], ref[2], t, 1e-3, 0.9,
                             0.999, 1e-7, wd, decoupled)
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == "float32" else dict(rtol=1e-11, atol=1e-13)
    numpy.testing.assert_allclose(p, ref[0], **tol)
    numpy.testing.assert_allclose(m, ref[1], **dict(tol, atol=tol["atol"] * 1e4))


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_numba_sgd(momentum, nesterov):
    be = NumpyBackend(accelerate=True)
    p, g = _flat(1, "float64")
    vel = numpy.zeros(N)
    ref_p, ref_v = p.copy(), numpy.zeros(N)
    for _ in range(2):
        be.sgd_update(p, g.copy(), vel, numpy.array([1e-3]), momentum=momentum, nesterov=nesterov,
                      weight_decay=0.01)
        ref_p, ref_v = reference.sgd(ref_p, g, ref_v, 1e-3, momentum, nesterov, 0.01)
    numpy.testing.assert_allclose(p, ref_p, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_numba_rmsprop(momentum):
    be = NumpyBackend(accelerate=True)
    p, g = _flat(2, "float64")
    sq, vel = numpy.zeros(N), numpy.zeros(N)
    ref = (p.copy(), numpy.zeros(N), numpy.zeros(N))
    for _ in range(2):
        be.rmsprop_update(p, g.copy(), sq, numpy.array([1e-3]), momentum=momentum, velocity=vel,
                          weight_decay=0.01)
        ref = reference.rmsprop(ref[0], g, ref[1], ref[2], 1e-3, 0.9, 1e-7, momentum, 0.01)
    numpy.testing.assert_allclose(p, ref[0], rtol=1e-12, atol=1e-12)


def test_skip_flag_leaves_everything_alone():
    be = NumpyBackend(accelerate=True)
    p, g = _flat(3)
    before = p.copy()
    step = numpy.zeros(1, numpy.int64)
    be.adam_update(p, g, numpy.zeros(N, "float32"), numpy.zeros(N, "float32"), step,
                   numpy.array([1e-3], "float32"), skip=numpy.ones(1, numpy.int32))
    numpy.testing.assert_array_equal(p, before)
    assert step[0] == 0
