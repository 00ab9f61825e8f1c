"""What fit, evaluate and predict accept, and where the data is checked: host data in
one pass, device data on the device, DLPack exporters without a copy, one read-back."""
import numpy
import pytest

import dnn
from dnn import backends
from dnn.data import make_moons
from dnn.layers import Dense


def model_on(backend, **kw):
    with dnn.use_backend(backend):
        model = dnn.Sequential([Dense(8, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=0,
                               **kw)
        model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
        model.build()
    return model


class CpuTensor:
    """Another library's CPU array: it exports DLPack and nothing else NumPy knows."""

    def __init__(self, array):
        self._array = numpy.ascontiguousarray(array)

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


class CudaTensor(CpuTensor):
    def __dlpack_device__(self):
        return (2, 1)  # kDLCUDA, device 1


class ReadCounter:
    """Counts the backend's read-backs and the largest array read."""

    def __init__(self, backend, monkeypatch):
        self.reads, self.largest = 0, 0
        original_read, original_to_numpy = backend.read_scalars, backend.to_numpy

        def read_scalars(values):
            self.reads += 1
            return original_read(values)

        def to_numpy(x):
            self.largest = max(self.largest, int(getattr(x, "size", 1)))
            return original_to_numpy(x)

        monkeypatch.setattr(backend, "read_scalars", read_scalars)
        monkeypatch.setattr(backend, "to_numpy", to_numpy)


def test_dlpack_exporters_train_like_numpy_arrays(use):
    x, y = make_moons(200, seed=0)
    plain, exported = model_on(use), model_on(use)
    plain.fit(x, y, epochs=2, verbose=0)
    exported.fit(CpuTensor(x), CpuTensor(y.astype(numpy.float64)), epochs=2, verbose=0)
    for a, b in zip(plain.get_weights(), exported.get_weights()):
        numpy.testing.assert_array_equal(a, b)
    numpy.testing.assert_array_equal(plain.predict(x), exported.predict(CpuTensor(x)))
    assert exported.evaluate(CpuTensor(x), y) == plain.evaluate(x, y)


def test_torch_cpu_tensors_are_taken_through_dlpack():
    torch = pytest.importorskip("torch")
    x, y = make_moons(100, seed=1)
    model = model_on("numpy")
    model.fit(torch.from_numpy(x), torch.from_numpy(y), epochs=1, verbose=0)
    assert model.predict(torch.from_numpy(x)).shape == (100, 1)


def test_a_dlpack_array_on_a_gpu_is_refused_by_the_numpy_backend_naming_both():
    model = model_on("numpy")
    x, y = make_moons(20, seed=0)
    with pytest.raises(TypeError, match=r"x: expected host data for backend 'numpy' \(cpu\); "
                                        r"got a test_data_adapter.CudaTensor on cuda:1"):
        model.fit(CudaTensor(x), y, verbose=0)


def test_host_data_is_checked_with_one_read_back_and_never_read_whole(monkeypatch):
    model = model_on("numpy")
    counter = ReadCounter(model.backend, monkeypatch)
    x, y = make_moons(4096, seed=0)
    model.fit(x, y, epochs=1, batch_size=4096, verbose=0)
    assert counter.reads == 1
    model.evaluate(x, y)
    assert counter.reads == 2


def test_finite_data_whose_sum_overflows_is_accepted():
    """The one-pass check sums; a finite array whose sum is infinite is told apart."""
    from dnn.training import data_adapter

    model = model_on("numpy", dtype="float32")
    x = numpy.full((10, 2), 3e38, numpy.float32)
    assert data_adapter.features(model, x).shape == (10, 2)
    x[3, 1] = numpy.inf
    with pytest.raises(ValueError, match=r"x: expected finite values; got inf at index \(3, 1\)"):
        data_adapter.features(model, x)


class SmallDevice(backends.NumpyBackend):
    """A device backend (host arrays are not its own) with 1 MiB free."""

    def is_native(self, x):
        return False

    def free_memory(self):
        return 1 << 20


def test_a_data_set_larger_than_the_device_is_streamed_rather_than_uploaded():
    """It used to be refused; now it streams through the loader threads (issue 21)."""
    from dnn.training import data_adapter
    from dnn.training.host_source import HostArraySource
    from dnn.training.options import FitOptions

    model = model_on(SmallDevice())
    x = numpy.zeros((200_000, 2), numpy.float32)
    y = numpy.zeros(200_000, numpy.float32)
    train, _ = data_adapter.training_sources(model, x, y, FitOptions())
    assert isinstance(train, HostArraySource)
    small, _ = data_adapter.training_sources(model, x[:1000], y[:1000], FitOptions())
    assert not isinstance(small, HostArraySource)  # what fits is uploaded once
    model.fit(x, y, epochs=1, batch_size=4096, verbose=0)


@pytest.mark.gpu
def test_cupy_arrays_and_cuda_tensors_train_without_a_host_round_trip(monkeypatch):
    if backends.backend_status()["cupy"] is not None:
        pytest.skip(backends.backend_status()["cupy"])
    import cupy

    x, y = make_moons(4096, seed=0)
    host_model, device_model = model_on("cupy"), model_on("cupy")
    host_model.fit(x, y, epochs=2, batch_size=256, verbose=0)
    counter = ReadCounter(device_model.backend, monkeypatch)
    device_model.fit(cupy.asarray(x, dtype=cupy.float32), cupy.asarray(y, dtype=cupy.float32),
                     epochs=2, batch_size=256, verbose=0)
    assert counter.reads == 1 and counter.largest <= 1  # the checks, and the epoch's loss
    for a, b in zip(host_model.get_weights(), device_model.get_weights()):
        numpy.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        tensor_model = model_on("cupy")
        tensor_model.fit(torch.as_tensor(x, device="cuda"), torch.as_tensor(y, device="cuda"),
                         epochs=2, batch_size=256, verbose=0)
        for a, b in zip(host_model.get_weights(), tensor_model.get_weights()):
            numpy.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
