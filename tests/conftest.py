import os

# Correctness tests compare against float64 references: TF32 matmul must be off.
os.environ["CUPY_TF32"] = "0"

import importlib.util
import pathlib

import numpy
import pytest
from support import ROOT, editable_install

_spec = importlib.util.find_spec("dnn")
if _spec is None:
    pytest.exit("dnn is not installed: run pip install '.[test]' in the checkout, then pytest",
                returncode=4)

if pathlib.Path(_spec.origin).resolve().parent == ROOT / "dnn" and not editable_install():
    # The checkout's dnn/ shadows the install (python -m pytest puts the working directory
    # on sys.path); it lacks dnn.backends and dnn.kernels, which only the install maps in.
    pytest.exit("the tests would import the checkout's dnn/, not the installed package: run "
                "pytest (not python -m pytest) after pip install '.[test]'", returncode=4)

import dnn  # noqa: E402
from dnn import backends  # noqa: E402

try:
    from hypothesis import HealthCheck, settings

    # The backend fixture hands out a shared, stateless instance, so reusing it across
    # examples is safe.
    settings.register_profile("dnn", deadline=None, max_examples=40,
                              suppress_health_check=[HealthCheck.function_scoped_fixture])
    settings.load_profile("dnn")
except ImportError:  # hypothesis comes with the test extra
    pass


def _backend_params():
    status = backends.backend_status()
    params = [pytest.param("numpy", id="numpy")]
    # With numba installed, "numpy" runs the fused numba updates; "numpy-pure" keeps the
    # pure-NumPy fallback under test too.
    params.append(pytest.param("numpy-pure", id="numpy-pure", marks=pytest.mark.skipif(
        not backends.get_backend("numpy").accelerated,
        reason="numba is not installed: 'numpy' already is the pure-NumPy path")))
    params.append(pytest.param(
        "cupy", id="cupy",
        marks=[pytest.mark.gpu, pytest.mark.skipif(status["cupy"] is not None,
                                                   reason=str(status["cupy"]))]))
    return params


BACKENDS = _backend_params()
_PURE = {}


@pytest.fixture(params=BACKENDS)
def backend_name(request):
    return request.param


@pytest.fixture
def backend(backend_name):
    if backend_name == "numpy-pure":
        return _PURE.setdefault("b", backends.NumpyBackend(accelerate=False))
    return backends.get_backend(backend_name)


@pytest.fixture
def use(backend):
    """Build models inside the test on the parametrized backend."""
    with dnn.use_backend(backend) as be:
        yield be


@pytest.fixture
def rng():
    return numpy.random.default_rng(1234)
