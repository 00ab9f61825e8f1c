"""ONNX export: the file onnxruntime runs where dnn is not installed predicts what
``model.predict`` does, for every layer and activation, at any batch size; it is valid
ONNX, says what it holds, and is written as every other output file is."""
import json
import os
import sys

import numpy
import pytest

import dnn
from dnn import backends
from dnn.utils.files import OutputPathError
from dnn.layers import (
    Activation,
    BatchNormalization,
    Dense,
    Dropout,
    LayerNormalization,
    Normalization,
)

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

BATCH_SIZES = (1, 7, 300)
# Offsets and scales far from 0 and 1, so that Normalization has work to do.
OFFSETS = numpy.array([10.0, -20.0, 5.0, 0.0])
SCALES = numpy.array([3.0, 0.5, 8.0, 1.0])


def raw_features(rng, n=300):
    return rng.normal(size=(n, len(OFFSETS))) * SCALES + OFFSETS


def randomize(model, rng):
    """Random weights everywhere (variances positive), so no layer is the identity."""
    shapes = [(name, shape) for layer in model.layers
              for name, shape in layer.param_shapes + layer.state_shapes]
    model.set_weights([rng.uniform(0.5, 2.0, shape) if "variance" in name
                       else rng.normal(size=shape) for name, shape in shapes])
    return model


def onnx_outputs(path, x):
    """The exported graph's outputs on the first ``n`` rows of ``x``, for each batch size."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {n: session.run(None, {"input": x[:n].astype(numpy.float32)})[0]
            for n in BATCH_SIZES}


def assert_exports_predictions(model, x, path, tol=1e-5):
    model.export(path, format="onnx")
    for n, got in onnx_outputs(path, x).items():
        assert got.dtype == numpy.float32 and got.shape == (n, model.output_dim)
        numpy.testing.assert_allclose(got, model.predict(x[:n]), rtol=tol, atol=tol,
                                      err_msg=f"batch of {n}")


# ----------------------------------------------------------- predictions match
LAYERS = {
    "Dense": lambda: Dense(5, "relu", input_dim=4),
    "Dropout": lambda: Dropout(0.5, input_dim=4),
    "Activation": lambda: Activation("tanh", input_dim=4),
    "BatchNormalization": lambda: BatchNormalization(epsilon=1e-2, input_dim=4),
    "LayerNormalization": lambda: LayerNormalization(epsilon=1e-2, input_dim=4),
    "Normalization": lambda: Normalization(input_dim=4),
    "LeakyReLU": lambda: dnn.layers.LeakyReLU(0.15, input_dim=4),
    "BatchNormalization(center=False)": lambda: BatchNormalization(center=False, input_dim=4),
    "BatchNormalization(scale=False)": lambda: BatchNormalization(scale=False, input_dim=4),
    "LayerNormalization(scale=False)": lambda: LayerNormalization(scale=False, input_dim=4),
    "LayerNormalization(center=False)": lambda: LayerNormalization(center=False, input_dim=4),
    "LayerNormalization(rms_scaling=True)": lambda: LayerNormalization(rms_scaling=True,
                                                                        input_dim=4),
    "Normalization(invert=True)": lambda: Normalization(invert=True, input_dim=4),
    "Residual": lambda: dnn.layers.Residual([Dense(4, "relu"), Dense(4)], activation="gelu",
                                            input_dim=4),
    "Residual with a projection": lambda: dnn.layers.Residual(
        [BatchNormalization(), Dense(6, "tanh"), Dropout(0.2)], input_dim=4),
    "nested Residual": lambda: dnn.layers.Residual(
        [dnn.layers.Residual([Dense(4, "relu")], activation="relu"), Dense(3)],
        activation="sigmoid", input_dim=4),
}


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
def test_each_layer_alone_exports_its_predictions(use, rng, tmp_path, make):
    model = randomize(dnn.Sequential([make()], seed=0), rng)
    x = raw_features(rng)
    if isinstance(model.layers[0], Normalization):
        model.layers[0].adapt(x)
    assert_exports_predictions(model, x, tmp_path / "m.onnx")


def test_normalization_floors_the_scale_of_constant_features_as_dnn_does(use, rng, tmp_path):
    # A variance of 0 (a constant feature) divides by NORMALIZATION_EPSILON, not by 0.
    model = dnn.Sequential([Normalization(mean=OFFSETS, variance=[0.0, 1e-20, 4.0, 1.0],
                                          input_dim=4)], seed=0)
    x = raw_features(rng)
    assert numpy.abs(model.predict(x)).max() > 1e6
    assert_exports_predictions(model, x, tmp_path / "m.onnx")


# Every backend activation, as users name them: gelu is exact unless approximate=True.
ACTIVATIONS = ["linear", "relu", "leaky_relu", {"name": "leaky_relu", "negative_slope": 0.05},
               "sigmoid", "tanh", "gelu", {"name": "gelu", "approximate": True}, "softmax"]


def test_the_activations_tried_cover_every_kernel():
    kernels = {dnn.activations.get(a).kernel for a in ACTIVATIONS}
    assert kernels == set(backends.ACTIVATIONS)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
def test_each_activation_exports_in_dense_and_activation_layers(use, rng, tmp_path,
                                                                activation):
    model = dnn.Sequential([Dense(6, activation), Activation(activation), Dense(3, activation),
                            dnn.layers.LeakyReLU(0.25)], input_dim=4, seed=0)
    randomize(model, rng)
    x = rng.normal(size=(300, 4)) * 2
    assert_exports_predictions(model, x, tmp_path / "m.onnx")


def every_layer(output_units, output_activation, dtype="float32"):
    return dnn.Sequential([
        Normalization(),
        Dense(16, "relu"),
        BatchNormalization(momentum=0.5),
        Dense(12, "leaky_relu"),
        LayerNormalization(),
        Dropout(0.3),
        Dense(12, "gelu"),
        Activation("tanh"),
        Dense(8, "sigmoid"),
        Dense(8, "linear"),
        Activation("relu"),
        Dense(output_units, output_activation),
    ], input_dim=len(OFFSETS), seed=0, dtype=dtype)


OUTPUTS = {"softmax": (3, "sparse_categorical_crossentropy"),
           "sigmoid": (1, "binary_crossentropy"), "linear": (2, "mse")}


def trained_every_layer(rng, output, dtype="float32"):
    """A model with every layer type, trained two epochs: the moving statistics and the
    weights are far from their initial values."""
    units, loss = OUTPUTS[output]
    x = raw_features(rng)
    y = {"softmax": lambda: rng.integers(0, units, len(x)),
         "sigmoid": lambda: (x[:, 0] > OFFSETS[0]).astype(float),
         "linear": lambda: rng.normal(size=(len(x), units))}[output]()
    model = every_layer(units, output, dtype)
    model.layers[0].adapt(x)
    model.compile(loss=loss, optimizer="adam")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    moving_mean = model.get_weights()[6]  # Normalization 2, Dense 2, BN gamma and beta
    assert numpy.abs(moving_mean).max() > 0.1, "BatchNormalization's statistics did not move"
    return model, x


@pytest.mark.parametrize("output", OUTPUTS)
def test_a_trained_model_with_every_layer_exports_its_predictions(use, rng, tmp_path, output):
    model, x = trained_every_layer(rng, output)
    assert_exports_predictions(model, x, tmp_path / "m.onnx")


def test_a_float64_model_exports_a_float32_graph_with_its_predictions(use, rng, tmp_path):
    model, x = trained_every_layer(rng, "softmax", dtype="float64")
    assert_exports_predictions(model, x, tmp_path / "m.onnx")
    graph = onnx.load(tmp_path / "m.onnx").graph
    assert {t.data_type for t in graph.initializer} == {onnx.TensorProto.FLOAT}


def test_a_mixed_precision_model_exports_its_float32_master_weights(use, rng, tmp_path):
    pytest.importorskip("ml_dtypes")
    mixed, x = trained_every_layer(rng, "softmax", dtype="mixed_bfloat16")
    full = every_layer(3, "softmax")
    full.set_weights(mixed.get_weights())
    mixed.export(tmp_path / "m.onnx")
    for n, got in onnx_outputs(tmp_path / "m.onnx", x).items():
        numpy.testing.assert_allclose(got, full.predict(x[:n]), rtol=1e-5, atol=1e-5)


def test_a_softmax_trained_on_logits_still_exports_probabilities(use, rng, tmp_path):
    x = raw_features(rng)
    y = numpy.eye(3)[rng.integers(0, 3, len(x))]
    model = dnn.Sequential([Normalization(), Dense(8, "relu"), Dense(3, "softmax")],
                           input_dim=4, seed=0)
    model.layers[0].adapt(x)
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    assert model.layers[-1].emit_logits  # the loss fuses the softmax
    model.fit(x, y, epochs=2, verbose=0)
    assert_exports_predictions(model, x, tmp_path / "m.onnx")
    got = onnx_outputs(tmp_path / "m.onnx", x)[300]
    numpy.testing.assert_allclose(got.sum(axis=1), 1, rtol=1e-5)
    assert (got >= 0).all()


# ------------------------------------------------------------- the file itself
def test_the_file_is_valid_onnx_and_says_what_it_holds(use, rng, tmp_path):
    model, _ = trained_every_layer(rng, "sigmoid")
    model.metadata.update({"data": "moons", "features": ["a", "b", "c", "d"]})
    model.class_names = ["no", "yes"]
    model.export(tmp_path / "m.onnx")
    proto = onnx.load(tmp_path / "m.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert proto.producer_name == "dnn" and proto.producer_version == dnn.__version__
    from dnn.saving.onnx_export import OPSET
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
    (inp,), (out,) = proto.graph.input, proto.graph.output
    for value, name, width in ((inp, "input", 4), (out, "output", 1)):
        assert value.name == name
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        batch, features = value.type.tensor_type.shape.dim
        assert batch.dim_param == "batch" and features.dim_value == width
    props = {p.key: p.value for p in proto.metadata_props}
    assert props == {"data": "moons", "features": json.dumps(["a", "b", "c", "d"]),
                     "class_names": json.dumps(["no", "yes"])}
    assert not any(n.op_type == "Dropout" for n in proto.graph.node)


def test_a_model_without_metadata_or_class_names_has_no_properties(use, tmp_path):
    model = dnn.Sequential([Dense(2)], input_dim=3, seed=0)
    model.export(tmp_path / "m.onnx")
    assert list(onnx.load(tmp_path / "m.onnx").metadata_props) == []


def test_metadata_that_is_not_json_is_refused_by_name(use, tmp_path):
    model = dnn.Sequential([Dense(2)], input_dim=3, seed=0)
    model.metadata["scaler"] = object()
    with pytest.raises(ValueError, match=r"model.metadata\['scaler'\]"):
        model.export(tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


def test_the_file_is_written_atomically_with_the_usual_mode(use, tmp_path, monkeypatch):
    from dnn.saving import onnx_export

    model = dnn.Sequential([Dense(2)], input_dim=3, seed=0)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the previous export")

    class Unserializable:
        def SerializeToString(self):
            raise RuntimeError("interrupted mid-write")

    with monkeypatch.context() as patch:
        patch.setattr(onnx_export, "build_model_proto", lambda model, onnx: Unserializable())
        with pytest.raises(RuntimeError, match="mid-write"):
            model.export(path)
    assert path.read_bytes() == b"the previous export"
    assert os.listdir(tmp_path) == ["m.onnx"]  # no temporary file left behind
    for umask in (0o022, 0o002):
        old = os.umask(umask)
        try:
            model.export(path)
        finally:
            os.umask(old)
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
        assert os.listdir(tmp_path) == ["m.onnx"]
        onnx.checker.check_model(onnx.load(path), full_check=True)


def test_a_missing_directory_fails_before_the_graph_is_built(use, tmp_path, monkeypatch):
    from dnn.saving import onnx_export

    built = []
    monkeypatch.setattr(onnx_export, "build_model_proto", lambda *args: built.append(args))
    model = dnn.Sequential([Dense(2)], input_dim=3, seed=0)
    path = tmp_path / "missing" / "m.onnx"
    with pytest.raises(OutputPathError, match="export: path") as info:
        model.export(path)
    assert str(path) in str(info.value)
    assert built == [] and not path.parent.exists()


# ---------------------------------------------------------------------- errors
def test_an_unbuilt_model_is_refused_naming_input_dim(use, tmp_path):
    with pytest.raises(RuntimeError, match="input_dim"):
        dnn.Sequential([Dense(3)]).export(tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


def test_an_unknown_format_is_refused_by_name(use, tmp_path):
    model = dnn.Sequential([Dense(2)], input_dim=3, seed=0)
    with pytest.raises(ValueError, match="format"):
        model.export(tmp_path / "m.tflite", format="tflite")
    assert not os.listdir(tmp_path)


def test_a_layer_or_activation_onnx_cannot_express_is_refused_by_name(use, tmp_path):
    class Custom(dnn.layers.Layer):
        pass

    model = dnn.Sequential([Dense(2, input_dim=3), Custom()], seed=0)
    with pytest.raises(ValueError, match=r"model.layers\[1\].*Custom"):
        model.export(tmp_path / "m.onnx")
    model = dnn.Sequential([Dense(2, input_dim=3)], seed=0)
    # as a future activation ONNX export lacks
    model.layers[0].activation_function = dnn.activations.ActivationFunction("swish")
    with pytest.raises(ValueError, match=r"model.layers\[0\].*activation.*'swish'"):
        model.export(tmp_path / "m.onnx")
    model = dnn.Sequential([dnn.layers.Residual([Dense(3), Custom()], input_dim=3)], seed=0)
    with pytest.raises(ValueError, match=r"model.layers\[0\].layers\[1\]: cannot export a "
                                         r"Custom layer"):
        model.export(tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


def test_without_onnx_the_error_says_how_to_install_it(use, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    model = dnn.Sequential([Dense(2)], input_dim=3, seed=0)
    with pytest.raises(ImportError, match="pip install onnx"):
        model.export(tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)
