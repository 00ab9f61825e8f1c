"""``model.save("m.keras")``: a Keras 3 archive that ``keras.saving.load_model`` opens.

The archive is what Keras 3's ``saving_lib`` writes: a zip of ``metadata.json``,
``config.json`` (the ``Sequential`` with an ``InputLayer`` and each layer's Keras config)
and ``model.weights.h5`` (each layer's variables under ``layers/<name>/vars/<index>``).
It holds the architecture and the weights, for inference or further work in Keras; the
training state (optimizer, epochs, dnn's metadata) stays in dnn's own .npz.

Layers, as Keras's: Dense (a leaky_relu of another slope than Keras's default 0.2
becomes a linear Dense followed by a LeakyReLU layer), Dropout, Activation, LeakyReLU,
BatchNormalization, LayerNormalization and Normalization (its mean and variance in the
config, as ``Normalization(mean=, variance=)``). Keras has no layer for a residual block
in a Sequential model, nor an activation for gelu's tanh approximation: those are
refused, naming .npz and ONNX, which keep them.

Writing needs h5py (the ``keras`` extra); Keras itself is not needed.
"""
from __future__ import annotations

import datetime
import io
import json
import zipfile

import numpy

from ..kernels.reference import LEAKY_RELU_SLOPE
from ..layers import (Activation, BatchNormalization, Dense, Dropout, LayerNormalization,
                      LeakyReLU, Normalization)
from ..utils.files import atomic_write, check_output_path
from ..version import __version__

# The Keras release whose archive layout this writes (keras/src/saving/saving_lib.py).
KERAS_VERSION = "3.15.1"
_KEEPS_IT = "save it as .npz (dnn) or export it to ONNX (model.export) instead"


class KerasExportError(ValueError):
    """A model that a Keras 3 archive cannot express."""


def require_h5py(what="save"):
    """The h5py module, which writes the archive's weights file; an ImportError that
    says how to install it when it is missing."""
    try:
        import h5py
    except ImportError as exc:
        raise ImportError(f"{what}: a .keras archive needs h5py: pip install h5py (or pip "
                          f"install '.[keras]' in the dnn checkout)") from exc
    return h5py


def check_expressible(model, what="save"):
    """Raise KerasExportError unless a Keras 3 Sequential can hold every layer of
    ``model``, with its activation; reads no weight, so it is cheap before training."""
    for i, layer in enumerate(model.layers):
        if type(layer) not in _CONVERTERS:
            raise KerasExportError(
                f"{what}: model.layers[{i}] ({layer.describe()}): a Keras Sequential model "
                f"has no layer for it, so a .keras archive cannot hold this model; "
                f"{_KEEPS_IT}")
        if hasattr(layer, "activation_function"):
            _activation(layer, i, what)


def save_keras(model, path):
    """Write ``model`` (built) to ``path`` as a Keras 3 ``.keras`` archive, atomically."""
    h5py = require_h5py()
    check_output_path(path, "save: path")
    layers = keras_layers(model)  # refuses what Keras cannot hold, before writing
    config = _model_config(model, [c for c, _ in layers])
    weights = _weights_file(h5py, model, [(c["config"]["name"], w) for c, w in layers])
    metadata = {"keras_version": KERAS_VERSION, "date_saved":
                datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
                "producer": f"dnn {__version__}"}

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr("metadata.json", json.dumps(metadata))
            archive.writestr("config.json", json.dumps(config))
            archive.writestr("model.weights.h5", weights)

    atomic_write(path, write, "save: path")


def keras_layers(model):
    """``[(Keras layer config, [host weights])]`` for the model's layers, in order."""
    check_expressible(model)  # refuses before a weight is read
    weights = {}
    for layer, name, view in model.weights.views:
        weights.setdefault(id(layer), {})[name] = model.backend.to_numpy(view)
    names, out = _Names(), []
    for i, layer in enumerate(model.layers):
        converter = _CONVERTERS[type(layer)]
        for class_name, config, variables in converter(layer, weights.get(id(layer), {}), i):
            config = {"name": names.next(class_name), "trainable": True,
                      "dtype": model.dtype_policy, **config}
            entry = {"module": "keras.layers", "class_name": class_name, "config": config,
                     "registered_name": None}
            if variables:  # Keras builds a layer from this before loading its variables
                entry["build_config"] = {"input_shape": [None, layer.input_dim]}
            out.append((entry, variables))
    return out


class _Names:
    """Keras's default layer names: the class in snake_case, then _1, _2..."""

    def __init__(self):
        self.seen = {}

    def next(self, class_name):
        base = "".join(f"_{c.lower()}" if c.isupper() else c for c in class_name).lstrip("_")
        base = {"leaky_re_l_u": "leaky_re_lu"}.get(base, base)
        count = self.seen.get(base, 0)
        self.seen[base] = count + 1
        return base if count == 0 else f"{base}_{count}"


def _activation(layer, i, what="save"):
    """Keras's name for the layer's activation, and the LeakyReLU slope to follow it
    with (None when the name says it all)."""
    function = layer.activation_function
    if function.kernel == "gelu_tanh":
        raise KerasExportError(
            f"{what}: model.layers[{i}] ({layer.describe()}): Keras has no activation for "
            f"gelu's tanh approximation by name, so a .keras archive cannot hold it; "
            f"{_KEEPS_IT}")
    if function.name == "leaky_relu" and function.slope != LEAKY_RELU_SLOPE:
        return "linear", function.slope
    return function.name, None


def _dense(layer, weights, i):
    activation, slope = _activation(layer, i)
    out = [("Dense", {"units": layer.units, "activation": activation, "use_bias": True},
            [weights["kernel"], weights["bias"]])]
    if slope is not None:
        out.append(("LeakyReLU", {"negative_slope": slope}, []))
    return out


def _activation_layer(layer, weights, i):
    activation, slope = _activation(layer, i)
    if slope is not None or isinstance(layer, LeakyReLU):
        return [("LeakyReLU", {"negative_slope": layer.activation_function.slope}, [])]
    return [("Activation", {"activation": activation}, [])]


def _affine_weights(layer, weights):
    return [weights[name] for name, _ in layer.param_shapes]


def _batch_norm(layer, weights, i):
    config = {"axis": -1, "momentum": layer.momentum, "epsilon": layer.epsilon,
              "center": layer.center, "scale": layer.scale}
    return [("BatchNormalization", config, _affine_weights(layer, weights)
             + [weights["moving_mean"], weights["moving_variance"]])]


def _layer_norm(layer, weights, i):
    config = {"axis": -1, "epsilon": layer.epsilon, "center": layer.center,
              "scale": layer.scale, "rms_scaling": layer.rms_scaling}
    return [("LayerNormalization", config, _affine_weights(layer, weights))]


def _normalization(layer, weights, i):
    config = {"axis": -1, "invert": layer.invert,
              "mean": numpy.asarray(weights["mean"], numpy.float64).tolist(),
              "variance": numpy.asarray(weights["variance"], numpy.float64).tolist()}
    return [("Normalization", config, [])]


_CONVERTERS = {
    Dense: _dense,
    Dropout: lambda layer, weights, i: [("Dropout", {"rate": layer.rate}, [])],
    Activation: _activation_layer,
    LeakyReLU: _activation_layer,
    BatchNormalization: _batch_norm,
    LayerNormalization: _layer_norm,
    Normalization: _normalization,
}


def _model_config(model, layer_configs):
    shape = [None, model.input_dim]
    dtype = model.dtype.name
    input_layer = {"module": "keras.layers", "class_name": "InputLayer",
                   "config": {"batch_shape": shape, "dtype": dtype, "sparse": False,
                              "name": "input_layer"}, "registered_name": None}
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": str(model.name or "sequential"), "trainable": True,
                       "dtype": model.dtype_policy,
                       "layers": [input_layer] + layer_configs, "build_input_shape": shape},
            "registered_name": None, "build_config": {"input_shape": shape}}


def _weights_file(h5py, model, named_weights):
    """The bytes of ``model.weights.h5``: each layer's variables in its group."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_group("vars").attrs["name"] = str(model.name or "sequential")
        layers = f.create_group("layers")
        for name, variables in named_weights:
            group = layers.create_group(name).create_group("vars")
            group.attrs["name"] = name
            for index, value in enumerate(variables):
                group.create_dataset(str(index), data=numpy.asarray(value, model.dtype))
    return buffer.getvalue()
