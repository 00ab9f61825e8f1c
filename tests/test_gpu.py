"""GPU-only behaviour (marked gpu; skipped without a usable CUDA device). TF32 is off
(conftest sets CUPY_TF32=0 and CupyBackend defaults to tf32=False)."""
import numpy
import pytest

from parity import TASKS, assert_parity, train

import dnn
from dnn import backends
from dnn.data import make_moons, make_spirals
from dnn.layers import Dense, Dropout

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    backends.backend_status()["cupy"] is not None,
    reason=str(backends.backend_status()["cupy"]))]


def _spiral_model(seed=0, dropout=0.0):
    layers = [Dense(64, "relu"), Dense(64, "tanh")]
    if dropout:
        layers.append(Dropout(dropout))
    model = dnn.Sequential(layers + [Dense(3, "softmax")], input_dim=2, seed=seed)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam",
                  metrics=["accuracy"])
    return model


def test_numpy_and_cupy_loss_histories_agree_over_200_steps():
    x, y = make_spirals(640, 3, seed=0)
    histories = {}
    for name in ("numpy", "cupy"):
        with dnn.use_backend(name):
            model = _spiral_model()
            # 20 epochs of 10 steps: 200 steps, one loss read back per epoch.
            histories[name] = model.fit(x, y, epochs=20, batch_size=64, verbose=0).history
    numpy.testing.assert_allclose(histories["cupy"]["loss"], histories["numpy"]["loss"],
                                  rtol=1e-4)


def test_dropout_masks_are_identical_across_backends():
    masks = [backends.get_backend(n).to_numpy(
        backends.get_backend(n).dropout_mask((64, 33), 0.3, 12345, 7)) for n in ("numpy", "cupy")]
    numpy.testing.assert_array_equal(masks[0], masks[1])


def test_resume_on_cupy_within_1e_6(tmp_path):
    x, y = make_spirals(300, 3, seed=1)
    with dnn.use_backend("cupy"):
        straight = _spiral_model(dropout=0.2)
        straight.fit(x, y, epochs=4, verbose=0)
        half = _spiral_model(dropout=0.2)
        half.fit(x, y, epochs=2, verbose=0)
        half.save(tmp_path / "m.npz")
        resumed = dnn.load_model(tmp_path / "m.npz")
        resumed.fit(x, y, epochs=4, initial_epoch=2, verbose=0)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        numpy.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_divergence_is_caught_on_the_device_without_per_step_sync():
    x, y = make_moons(256, seed=0)
    with dnn.use_backend("cupy"):
        model = dnn.Sequential([Dense(16, "relu"), Dense(1)], input_dim=2, seed=0)
        model.compile(loss="mse", optimizer=dnn.optimizers.SGD(learning_rate=1e6))
        with pytest.raises(dnn.NonFiniteLossError, match=r"epoch 1, step \d+/8"):
            model.fit(x, y * 1e3, epochs=3, batch_size=32, verbose=0)
    assert all(numpy.isfinite(w).all() for w in model.get_weights())


def test_arrays_from_another_library_or_device_are_refused():
    import cupy

    with dnn.use_backend("numpy"):
        model = dnn.Sequential([Dense(1, "sigmoid")], input_dim=2, seed=0)
        model.compile(loss="binary_crossentropy", optimizer="adam")
        with pytest.raises(TypeError, match=r"numpy.*cupy\.ndarray on cuda:0"):
            model.fit(cupy.zeros((4, 2)), numpy.zeros(4), verbose=0)
    with dnn.use_backend("cupy"):
        model = dnn.Sequential([Dense(1, "sigmoid")], input_dim=2, seed=0)
        model.compile(loss="binary_crossentropy", optimizer="adam")
        model.fit(cupy.zeros((4, 2)), cupy.zeros(4), verbose=0)  # same device: accepted


def test_out_of_memory_names_the_size_and_suggests_a_smaller_batch():
    import cupy

    be = backends.get_backend("cupy")
    with pytest.raises(MemoryError, match=r"MiB .*smaller batch_size") as info:
        be.empty((1 << 50,), "float32")
    assert isinstance(info.value.__cause__, cupy.cuda.memory.OutOfMemoryError)


def test_tf32_is_an_opt_in():
    from dnn.backends.cupy_backend import CupyBackend

    rng = numpy.random.default_rng(0)
    a, b = rng.normal(size=(512, 512)), rng.normal(size=(512, 512))
    exact = a.astype(numpy.float32).astype(numpy.float64) @ b.astype(numpy.float32)
    errors = {}
    for tf32 in (False, True):
        be = CupyBackend(0, tf32=tf32)
        got = be.to_numpy(be.gemm(be.asarray(a, "float32"), be.asarray(b, "float32")))
        errors[tf32] = numpy.abs(got - exact).max()
    assert errors[False] < 1e-3 < errors[True]


def test_warmup_compiles_the_kernels():
    be = backends.get_backend("cupy")
    model = _spiral_model()
    with dnn.use_backend("cupy"):
        model.build()
    model.warmup()
    assert "dnn_adam_f32" in be.kernels.runtime.modules  # and every kernel of a step


@pytest.mark.parametrize("task", TASKS)
def test_new_layers_losses_metrics_and_schedules_agree_across_backends(task):
    """float64, a captured step on CuPy: every kernel of issue 12 (normalization layers,
    penalties, label smoothing, sample weights, device metrics, the scheduled rate),
    within 100 times what another order of the reductions does on the CPU
    (tests/parity.py, tests/test_parity_tolerance.py)."""
    assert_parity(train(task, "cupy"), train(task, "numpy"))


def _two_devices():
    return backends.gpu_count() >= 2


@pytest.mark.skipif(not _two_devices(), reason="needs two CUDA devices")
def test_a_model_on_another_device_trains_while_device_0_is_current():
    """cupy:1 with device 0 current: kernels, GEMMs, the captured graph and CuPy's own
    operations all run on device 1 (a graph or kernel of device 0 reading device 1's
    memory fails or computes garbage)."""
    import cupy

    x, y = make_spirals(320, 3, seed=0)
    results = {}
    for name in ("cupy", "cupy:1"):
        with cupy.cuda.Device(0), dnn.use_backend(name):
            model = _spiral_model()
            history = model.fit(x, y, epochs=3, batch_size=64, verbose=0).history
            results[name] = (history["loss"], model.predict(x))
        assert cupy.cuda.runtime.getDevice() == 0
    numpy.testing.assert_allclose(results["cupy:1"][0], results["cupy"][0], rtol=1e-6)
    numpy.testing.assert_allclose(results["cupy:1"][1], results["cupy"][1], rtol=1e-5,
                                  atol=1e-7)


def test_a_sync_inside_a_capture_reports_the_sync():
    """The capture is invalidated by the host read, and ending it fails too; the error
    raised is the read's, not the end of the capture's."""
    be = backends.get_backend("cupy")
    x = be.zeros((4,), "float32")
    with pytest.raises(Exception) as info:  # CuPy's error for a sync during capture
        be.capture(lambda: be.to_numpy(x))
    assert "Invalidated" not in str(info.value), info.value
    be.synchronize()  # the device is usable afterwards
    assert be.to_numpy(x).tolist() == [0.0] * 4


def test_bfloat16_arrays_exist_on_this_cupy():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    be = backends.get_backend("cupy")
    x = be.asarray(numpy.arange(4, dtype=numpy.float32))
    y = be.cast(x, be.empty((4,), ml_dtypes.bfloat16))
    assert be.to_numpy(y).astype(numpy.float32).tolist() == [0.0, 1.0, 2.0, 3.0]
