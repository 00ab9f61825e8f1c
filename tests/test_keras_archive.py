"""``model.save("m.keras")`` against Keras 3 itself, where it is installed: Keras's
``load_model`` opens the archive and predicts what dnn predicts, for every layer Keras
has; and, from identical float64 weights, Keras computes dnn's leaky_relu and gelu
(forward and through a few SGD steps). Keras runs in a subprocess, on its NumPy backend
for prediction and on JAX (float64) for training. Without Keras (or h5py) the archive
tests that need it skip; the refusals run everywhere."""
import json
import os
import textwrap
import zipfile

import numpy
import pytest
from support import python

import dnn
from dnn.layers import (Activation, BatchNormalization, Dense, Dropout, LayerNormalization,
                        LeakyReLU, Normalization, Residual)
from dnn.saving.keras_archive import KerasExportError


def keras_available(backend):
    out = python("-c", "import keras, h5py", env={**os.environ, "KERAS_BACKEND": backend})
    return out.returncode == 0


needs_keras = pytest.mark.skipif(not keras_available("numpy"),
                                 reason="keras (and h5py) not installed")
needs_keras_jax = pytest.mark.skipif(not keras_available("jax"),
                                     reason="keras with jax not installed")


def run_keras(script, backend, tmp_path):
    """Run ``script`` under Keras's ``backend`` in a subprocess (x64 JAX for jax)."""
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_ENABLE_X64": "1",
           "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = python("-W", "ignore", "-c", textwrap.dedent(script), env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


MODELS = {
    "every layer": lambda: [
        Normalization(), Dense(16, "relu"), BatchNormalization(momentum=0.9),
        Dense(12, "leaky_relu"), LayerNormalization(), Dropout(0.3), Dense(12, "gelu"),
        Activation("tanh"), LeakyReLU(0.1), Dense(8, "sigmoid"), Dense(3, "softmax")],
    "options": lambda: [
        Normalization(), Dense(8, {"name": "leaky_relu", "negative_slope": 0.05}),
        BatchNormalization(center=False), LayerNormalization(scale=False),
        Dense(8, "linear"), BatchNormalization(scale=False),
        LayerNormalization(rms_scaling=True), Activation({"name": "leaky_relu",
                                                          "negative_slope": 0.3}),
        Dense(2, "linear"), Normalization(mean=[1.0, -2.0], variance=[4.0, 9.0],
                                          invert=True)],
}


def trained(layers, dtype="float32"):
    rng = numpy.random.default_rng(0)
    x = rng.normal(size=(120, 4)) * [3, 0.5, 8, 1] + [10, -20, 5, 0]
    model = dnn.Sequential(layers, input_dim=4, seed=0, dtype=dtype)
    model.layers[0].adapt(x)
    out = model.output_dim
    y = rng.integers(0, out, 120) if out == 3 else rng.normal(size=(120, out))
    model.compile(loss="sparse_categorical_crossentropy" if out == 3 else "mse",
                  optimizer="adam")
    model.fit(x, y, epochs=3, verbose=0)
    return model, x


# Keras 3.15's NumPy backend computes in float32 whatever the policy (its
# convert_to_tensor casts float64 down), and on JAX its tanh and the normalization
# layers' rsqrt come out in float32 too (result_type(x, float)): float64 is compared on
# JAX (x64) with the layers Keras keeps in float64.
MODELS_KEPT_IN_FLOAT64 = {
    "float64-exact layers": lambda: [
        Normalization(), Dense(16, "relu"), Dense(12, "leaky_relu"), Dropout(0.3),
        Dense(12, "gelu"), LeakyReLU(0.1), Dense(8, {"name": "leaky_relu",
                                                     "negative_slope": 0.05}),
        Dense(8, "sigmoid"), Dense(3, "softmax")]}
PREDICT_CASES = [pytest.param("float32", "numpy", 1e-6, MODELS, marks=needs_keras),
                 pytest.param("float64", "jax", 1e-12, MODELS_KEPT_IN_FLOAT64,
                              marks=needs_keras_jax)]


@pytest.mark.parametrize("dtype,backend,tolerance,models", PREDICT_CASES)
def test_keras_load_model_predicts_what_dnn_predicts(tmp_path, dtype, backend, tolerance,
                                                     models):
    probe = {}
    for i, (name, make) in enumerate(models.items()):
        model, x = trained(make(), dtype)
        model.save(tmp_path / f"m{i}.keras")
        probe[f"x{i}"], probe[f"want{i}"] = x, model.predict(x)
    numpy.savez(tmp_path / "probe.npz", **probe)
    run_keras(f"""
        import numpy, keras
        keras.config.set_floatx({dtype!r})
        probe = numpy.load("probe.npz")
        out = {{}}
        for i in range({len(models)}):
            model = keras.saving.load_model(f"m{{i}}.keras")
            out[f"got{{i}}"] = model.predict(probe[f"x{{i}}"], verbose=0)
        numpy.savez("got.npz", **out)
    """, backend, tmp_path)
    got = numpy.load(tmp_path / "got.npz")
    for i, name in enumerate(models):
        want = probe[f"want{i}"]
        error = numpy.abs(got[f"got{i}"] - want).max() / numpy.abs(want).max()
        print(f"{name} ({dtype}, Keras on {backend}): max difference {error:.1e} of the "
              f"largest output")
        assert error < tolerance, name


@needs_keras_jax
def test_keras_trains_leaky_relu_and_gelu_as_dnn_does_from_the_same_weights(tmp_path):
    """Differences 1 and 6 of issue 19, measured: float64, the same initial weights, the
    same data; Keras's forward pass and three SGD steps against dnn's."""
    rng = numpy.random.default_rng(1)
    x, y = rng.normal(size=(64, 5)) * 2, rng.normal(size=(64, 2))
    model = dnn.Sequential([Dense(16, "leaky_relu"), Dense(16, "gelu"),
                            LeakyReLU(0.1), Dense(8, {"name": "leaky_relu",
                                                      "negative_slope": 0.05}),
                            Dense(2)], input_dim=5, seed=2, dtype="float64")
    model.save(tmp_path / "m.keras")
    numpy.savez(tmp_path / "data.npz", x=x, y=y)
    before = model.predict(x)
    model.compile(loss="mse", optimizer=dnn.optimizers.SGD(0.05))
    model.fit(x, y, epochs=3, batch_size=64, shuffle=False, verbose=0)
    run_keras("""
        import numpy, keras
        keras.config.set_floatx("float64")
        data = numpy.load("data.npz")
        model = keras.saving.load_model("m.keras")
        before = model.predict(data["x"], verbose=0)
        model.compile(loss="mse", optimizer=keras.optimizers.SGD(0.05))
        model.fit(data["x"], data["y"], epochs=3, batch_size=64, shuffle=False, verbose=0)
        numpy.savez("keras.npz", before=before, *model.get_weights())
    """, "jax", tmp_path)
    keras_out = numpy.load(tmp_path / "keras.npz")
    forward = numpy.abs(keras_out["before"] - before).max() / numpy.abs(before).max()
    trained_weights = model.get_weights()
    steps = max(numpy.abs(keras_out[f"arr_{i}"] - w).max() / numpy.abs(w).max()
                for i, w in enumerate(trained_weights))
    print(f"float64 relative difference from Keras: forward {forward:.1e}, "
          f"after 3 SGD steps {steps:.1e}")
    assert forward < 1e-12 and steps < 1e-12


@pytest.mark.parametrize("layers,pattern", [
    (lambda: [Residual([Dense(4, "relu")])], r"model.layers\[0\] \(Residual\(1 layers\)\)"
                                             r": a Keras Sequential model has no layer"),
    (lambda: [Dense(4, {"name": "gelu", "approximate": True})],
     r"no activation for gelu's tanh approximation"),
])
def test_what_keras_cannot_hold_is_refused_naming_npz_and_onnx(tmp_path, layers, pattern):
    pytest.importorskip("h5py")
    model = dnn.Sequential(layers(), input_dim=3, seed=0)
    with pytest.raises(KerasExportError, match=pattern) as error:
        model.save(tmp_path / "m.keras")
    assert ".npz" in str(error.value) and "ONNX" in str(error.value)
    assert not os.listdir(tmp_path)


def test_the_archive_is_keras_layout(tmp_path):
    pytest.importorskip("h5py")
    import h5py

    model, _ = trained(MODELS["every layer"]())
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        assert archive.namelist() == ["metadata.json", "config.json", "model.weights.h5"]
        config = json.loads(archive.read("config.json"))
        archive.extract("model.weights.h5", tmp_path)
    layers = config["config"]["layers"]
    assert config["class_name"] == "Sequential" and layers[0]["class_name"] == "InputLayer"
    assert [c["config"]["name"] for c in layers[1:4]] == ["normalization", "dense",
                                                          "batch_normalization"]
    with h5py.File(tmp_path / "model.weights.h5") as f:
        numpy.testing.assert_array_equal(f["layers/dense/vars/0"][()],
                                         model.get_weights()[2])  # after mean, variance
        assert len(f["layers/batch_normalization/vars"]) == 4


def test_without_h5py_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)
    model = dnn.Sequential([Dense(2)], input_dim=3, seed=0)
    with pytest.raises(ImportError, match=r"pip install h5py"):
        model.save(tmp_path / "m.keras")


def test_dnn_load_model_says_a_keras_archive_is_for_keras(tmp_path):
    pytest.importorskip("h5py")
    dnn.Sequential([Dense(2)], input_dim=3, seed=0).save(tmp_path / "m.keras")
    with pytest.raises(dnn.ModelFileError, match="it is a Keras archive: open it with "
                                                 "keras.saving.load_model"):
        dnn.load_model(tmp_path / "m.keras")


def test_a_keras_suffix_in_any_case_writes_an_archive(tmp_path):
    """The suffix is read in any case, as the path checks read it: "m.KERAS" is a Keras
    archive, never dnn's .npz under another name; ModelCheckpoint writes one too."""
    pytest.importorskip("h5py")
    x, y = dnn.data.make_moons(64, seed=0)
    with dnn.use_backend("numpy"):
        model = dnn.Sequential([Dense(4, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=0)
        model.compile(loss="binary_crossentropy", optimizer="adam")
        model.save(tmp_path / "m.KERAS")
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[dnn.callbacks.ModelCheckpoint(str(tmp_path / "c-{epoch}.Keras"))])
    for name in ("m.KERAS", "c-1.Keras"):
        with zipfile.ZipFile(tmp_path / name) as archive:
            assert archive.namelist() == ["metadata.json", "config.json", "model.weights.h5"]


@pytest.mark.parametrize("layers", [lambda: [Residual([Dense(4, "relu")])],
                                    lambda: [Dense(4, {"name": "gelu", "approximate": True})]])
def test_check_saveable_refuses_before_any_weight_is_read(layers, monkeypatch):
    """What training callers check first: the same refusal as save, reading nothing."""
    pytest.importorskip("h5py")
    model = dnn.Sequential(layers(), input_dim=3, seed=0)
    monkeypatch.setattr(model.backend, "to_numpy", lambda *a: pytest.fail("read a weight"))
    with pytest.raises(KerasExportError, match=r"ModelCheckpoint: model.layers\[0\]"):
        dnn.saving.check_saveable(model, "m.keras", "ModelCheckpoint")
    model.check_saveable("m.npz")  # dnn's own file holds every model
    dnn.Sequential([Dense(2)], input_dim=3, seed=0).check_saveable("m.keras")
