"""Export a built model to ONNX, for inference where dnn is not installed.

ONNX is the interchange format for trained networks: onnxruntime (and the other ONNX
runtimes and converters) runs the exported file from C, C++, C#, Java, JavaScript or
Python, on servers, phones and browsers that have neither dnn nor its backends. A
model trained with dnn is deployed by ``model.export("model.onnx")`` and run with
``onnxruntime.InferenceSession("model.onnx").run(None, {"input": x})``.

The file holds one graph, from the raw input features to the output layer's
activation (probabilities for a softmax or sigmoid output, even when training fused
the activation into the loss and the model hands the loss logits):

- input ``"input"``: float32, shape ``["batch", input_dim]``;
- output ``"output"``: float32, shape ``["batch", output_dim]``;
- ``"batch"`` is a symbolic dimension, so one file serves every batch size.

Weights are float32 initializers whatever the model's dtype (float64 weights are
rounded; under "mixed_bfloat16" the float32 master weights are exported). The graph is
the inference form of every layer: Dropout is absent and BatchNormalization uses its
moving statistics. ``model.metadata`` and ``class_names`` (when the model has them) go
into the file's ``metadata_props``.

Layers, as ONNX operators:

- Dense: ``Gemm(x, kernel, bias)``, then the activation;
- Activation: the activation; Dropout: nothing;
- Activation and LeakyReLU: the activation;
- BatchNormalization: ``(x - moving_mean) * scale + beta`` with
  ``scale = gamma / sqrt(moving_variance + epsilon)`` computed in float64 (gamma 1 and
  beta 0 without scale or center);
- LayerNormalization: ``LayerNormalization(axis=-1, epsilon)`` (gamma 1 without scale,
  no bias without center); with rms_scaling, ``x * gamma / sqrt(var + epsilon)`` composed
  from ReduceMean, Sub, Mul, Add, Sqrt and Div;
- Normalization: ``(x - mean) / max(sqrt(variance), NORMALIZATION_EPSILON)``, or with
  invert ``x * max(...) + mean``;
- Residual: its layers' nodes, its projection's (a Gemm) or nothing on the skip path,
  an Add, then its activation.

Activations: Relu, LeakyRelu (alpha: the layer's negative slope), Sigmoid, Tanh, Softmax
(axis -1), nothing for linear, the exact gelu composed from Div, Erf, Add and Mul, and
gelu's tanh approximation composed from Mul, Add and Tanh, with the constants of
``dnn.kernels.reference``.
"""
from __future__ import annotations

import collections
import json

import numpy

from ..kernels.reference import GELU_C, GELU_K, GELU_SQRT2, NORMALIZATION_EPSILON
from ..layers import (
    Activation,
    BatchNormalization,
    Dense,
    Dropout,
    LayerNormalization,
    LeakyReLU,
    Normalization,
    Residual,
)
from ..utils.files import atomic_write, check_output_path
from ..version import __version__

# 17 is the oldest opset with the LayerNormalization operator, and is read by
# onnxruntime 1.12 and later and by the other common runtimes and converters (TensorRT
# 8.6, OpenVINO, onnx2tf). Gelu would need opset 20 (onnxruntime 1.17+); composed from
# primitives it matches dnn's gelu as closely, so it does not justify the newer opset.
OPSET = 17
# The IR version that opset 17 came with: newer ones are refused by older runtimes.
IR_VERSION = 8
INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_DIM = "batch"

_MISSING_ONNX = ("export: ONNX export needs the onnx package: pip install onnx "
                 "(or pip install '.[onnx]' in the dnn checkout)")


def export(model, path):
    """Write ``model`` (built) to ``path`` as an ONNX file, atomically. See the module
    docstring for the graph's inputs, outputs and operators."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(_MISSING_ONNX) from exc
    # A bad path fails here, before the graph is built and serialized.
    check_output_path(path, "export: path")
    proto = build_model_proto(model, onnx)
    atomic_write(path, lambda f: f.write(proto.SerializeToString()), "export: path")


def build_model_proto(model, onnx):
    """The ``onnx.ModelProto`` of ``model`` (built), using the ``onnx`` module given."""
    if not model.built:
        raise RuntimeError("export: the model has no weights yet; give the model its input "
                           "width (input_dim=) or call fit first")
    weights = _layer_weights(model)
    graph = _Graph(onnx)
    x = INPUT_NAME
    for i, layer in enumerate(model.layers):
        x = _export_layer(graph, _Place(f"layers.{i}", f"model.layers[{i}]"), layer,
                          weights.get(id(layer), {}), x)
    if x == INPUT_NAME:  # nothing but Dropout: ONNX needs a node between input and output
        x = graph.node("Identity", [x], "identity")
    graph.rename_output(x, OUTPUT_NAME)
    helper = onnx.helper
    tensor = onnx.TensorProto.FLOAT
    proto_graph = helper.make_graph(
        graph.nodes, str(model.name or "dnn"),
        [helper.make_tensor_value_info(INPUT_NAME, tensor, [BATCH_DIM, model.input_dim])],
        [helper.make_tensor_value_info(OUTPUT_NAME, tensor, [BATCH_DIM, model.output_dim])],
        graph.initializers)
    proto = helper.make_model(proto_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="dnn", producer_version=__version__,
                              ir_version=IR_VERSION)
    props = _metadata_props(model)
    if props:
        helper.set_model_props(proto, props)
    return proto


def _layer_weights(model):
    """``{id(layer): {weight name: float64 host array}}``, from the model's weight views
    (the float32 master weights under a mixed policy, not their bfloat16 copy)."""
    be = model.backend
    out = {}
    for layer, name, view in model.weights.views:
        out.setdefault(id(layer), {})[name] = numpy.asarray(be.to_numpy(view), numpy.float64)
    return out


class _Graph:
    """The nodes and initializers being built, with unique tensor names."""

    def __init__(self, onnx):
        self._helper = onnx.helper
        self._numpy_helper = onnx.numpy_helper
        self.nodes = []
        self.initializers = []

    def constant(self, name, value):
        """An initializer holding ``value`` as float32; returns its name."""
        array = numpy.asarray(value, dtype=numpy.float32)
        self.initializers.append(self._numpy_helper.from_array(array, name))
        return name

    def node(self, op_type, inputs, name, **attributes):
        """Append a node with one output, named ``name``; returns the output's name."""
        self.nodes.append(self._helper.make_node(op_type, inputs, [name], name=name,
                                                 **attributes))
        return name

    def rename_output(self, tensor, new_name):
        """Make the node that produces ``tensor`` produce ``new_name`` instead."""
        node = next(n for n in reversed(self.nodes) if n.output[0] == tensor)
        node.output[0] = new_name


class _Place(collections.namedtuple("_Place", "prefix where")):
    """A layer's tensor-name prefix ("layers.3.0") and how errors name it
    ("model.layers[3].layers[0]")."""

    def inside(self, tag, where):
        return _Place(f"{self.prefix}.{tag}", f"{self.where}{where}")


def _export_layer(graph, place, layer, weights, x):
    """Append the nodes of ``layer`` (at ``place``) reading tensor ``x``; returns the
    output tensor."""
    kind = type(layer)
    exporter = _EXPORTERS.get(kind)
    if exporter is None:
        exportable = ", ".join(cls.__name__ for cls in _EXPORTERS)
        raise ValueError(f"export: {place.where}: cannot export a {kind.__name__} layer "
                         f"to ONNX; expected one of {exportable}")
    return exporter(graph, place, layer, weights, x)


def _export_residual(graph, place, layer, weights, x):
    """The block's layers, plus its input or its projection, then its activation."""
    def own(tag):
        start = f"{tag}."
        return {k[len(start):]: v for k, v in weights.items() if k.startswith(start)}

    out = x
    for j, sublayer in enumerate(layer.layers):
        out = _export_layer(graph, place.inside(j, f".layers[{j}]"), sublayer, own(j), out)
    skip = x
    if layer.projection is not None:
        skip = _export_layer(graph, place.inside("projection", ".projection"),
                             layer.projection, own("projection"), x)
    total = graph.node("Add", [out, skip], f"{place.prefix}.add")
    return _export_activation(graph, place, layer, total)


def _export_dense(graph, place, layer, weights, x):
    prefix = place.prefix
    kernel = graph.constant(f"{prefix}.kernel", weights["kernel"])
    bias = graph.constant(f"{prefix}.bias", weights["bias"])
    z = graph.node("Gemm", [x, kernel, bias], f"{prefix}.gemm")
    # Always the layer's activation: emit_logits only concerns the training loss.
    return _export_activation(graph, place, layer, z)


def _export_batch_norm(graph, place, layer, weights, x):
    prefix = place.prefix
    gamma = weights.get("gamma", 1.0)
    scale = gamma / numpy.sqrt(weights["moving_variance"] + layer.epsilon)
    mean = graph.constant(f"{prefix}.moving_mean", weights["moving_mean"])
    scale = graph.constant(f"{prefix}.scale", scale)
    centred = graph.node("Sub", [x, mean], f"{prefix}.sub")
    scaled = graph.node("Mul", [centred, scale], f"{prefix}.mul")
    if "beta" not in weights:
        return scaled
    beta = graph.constant(f"{prefix}.beta", weights["beta"])
    return graph.node("Add", [scaled, beta], f"{prefix}.add")


def _export_layer_norm(graph, place, layer, weights, x):
    prefix = place.prefix
    gamma = graph.constant(f"{prefix}.gamma",
                           weights.get("gamma", numpy.ones(layer.input_dim)))
    if layer.rms_scaling:
        return _export_rms_scaling(graph, prefix, layer, gamma, x)
    inputs = [x, gamma] + ([graph.constant(f"{prefix}.beta", weights["beta"])]
                           if "beta" in weights else [])
    return graph.node("LayerNormalization", inputs, f"{prefix}.layer_norm", axis=-1,
                      epsilon=layer.epsilon)


def _export_rms_scaling(graph, prefix, layer, gamma, x):
    """``x * gamma / sqrt(var(x) + epsilon)``, var over the row (Keras 3's rms_scaling)."""
    mean = graph.node("ReduceMean", [x], f"{prefix}.mean", axes=[-1], keepdims=1)
    centred = graph.node("Sub", [x, mean], f"{prefix}.centred")
    square = graph.node("Mul", [centred, centred], f"{prefix}.square")
    var = graph.node("ReduceMean", [square], f"{prefix}.var", axes=[-1], keepdims=1)
    eps = graph.constant(f"{prefix}.epsilon", layer.epsilon)
    sd = graph.node("Sqrt", [graph.node("Add", [var, eps], f"{prefix}.var_eps")],
                    f"{prefix}.sd")
    scaled = graph.node("Mul", [x, gamma], f"{prefix}.scaled")
    return graph.node("Div", [scaled, sd], f"{prefix}.out")


def _export_normalization(graph, place, layer, weights, x):
    prefix = place.prefix
    # The floor as in kernels.reference.standardize: a constant feature maps to 0.
    divisor = numpy.maximum(numpy.sqrt(weights["variance"]), NORMALIZATION_EPSILON)
    mean = graph.constant(f"{prefix}.mean", weights["mean"])
    divisor = graph.constant(f"{prefix}.divisor", divisor)
    if layer.invert:
        scaled = graph.node("Mul", [x, divisor], f"{prefix}.mul")
        return graph.node("Add", [scaled, mean], f"{prefix}.add")
    centred = graph.node("Sub", [x, mean], f"{prefix}.sub")
    return graph.node("Div", [centred, divisor], f"{prefix}.div")


def _export_activation_layer(graph, place, layer, weights, x):
    return _export_activation(graph, place, layer, x)


_EXPORTERS = {
    Dense: _export_dense,
    Dropout: lambda graph, place, layer, weights, x: x,
    Activation: _export_activation_layer,
    LeakyReLU: _export_activation_layer,
    BatchNormalization: _export_batch_norm,
    LayerNormalization: _export_layer_norm,
    Normalization: _export_normalization,
    Residual: _export_residual,
}

_ELEMENTWISE = {"relu": ("Relu", {}), "sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}),
                "softmax": ("Softmax", {"axis": -1})}


def _export_activation(graph, place, layer, x):
    """The nodes of ``layer``'s activation function applied to ``x``."""
    function = layer.activation_function
    activation = function.kernel
    prefix = f"{place.prefix}.{activation}"
    if activation == "linear":
        return x
    if activation in _ELEMENTWISE:
        op_type, attributes = _ELEMENTWISE[activation]
        return graph.node(op_type, [x], prefix, **attributes)
    if activation == "leaky_relu":
        return graph.node("LeakyRelu", [x], prefix, alpha=function.slope)
    if activation in _GELUS:
        return _GELUS[activation](graph, prefix, x)
    raise ValueError(f"export: {place.where} ({layer.describe()}): activation: cannot "
                     f"export {activation!r} to ONNX; expected one of linear, leaky_relu, "
                     f"gelu, {', '.join(_ELEMENTWISE)}")


def _export_gelu(graph, prefix, x):
    """x (erf(x / sqrt 2) + 1) / 2, in the order kernels.reference computes it (Erf is in
    every opset since 9; ONNX's Gelu operator needs opset 20, see OPSET)."""
    sqrt2 = graph.constant(f"{prefix}.sqrt2", GELU_SQRT2)
    one = graph.constant(f"{prefix}.one", 1.0)
    two = graph.constant(f"{prefix}.two", 2.0)
    erf = graph.node("Erf", [graph.node("Div", [x, sqrt2], f"{prefix}.scaled")],
                     f"{prefix}.erf")
    product = graph.node("Mul", [x, graph.node("Add", [erf, one], f"{prefix}.one_erf")],
                         f"{prefix}.product")
    return graph.node("Div", [product, two], f"{prefix}.out")


def _export_gelu_tanh(graph, prefix, x):
    """0.5 * x * (1 + tanh(k * (x + c * x^3))), in the order kernels.reference computes
    it."""
    c = graph.constant(f"{prefix}.c", GELU_C)
    k = graph.constant(f"{prefix}.k", GELU_K)
    one = graph.constant(f"{prefix}.one", 1.0)
    half = graph.constant(f"{prefix}.half", 0.5)
    x2 = graph.node("Mul", [x, x], f"{prefix}.x2")
    x3 = graph.node("Mul", [x2, x], f"{prefix}.x3")
    cx3 = graph.node("Mul", [x3, c], f"{prefix}.cx3")
    inner = graph.node("Add", [x, cx3], f"{prefix}.inner")
    t = graph.node("Tanh", [graph.node("Mul", [inner, k], f"{prefix}.k_inner")],
                   f"{prefix}.tanh")
    half_x = graph.node("Mul", [x, half], f"{prefix}.half_x")
    return graph.node("Mul", [half_x, graph.node("Add", [t, one], f"{prefix}.one_t")],
                      f"{prefix}.out")


_GELUS = {"gelu": _export_gelu, "gelu_tanh": _export_gelu_tanh}


def _metadata_props(model):
    """``model.metadata`` as ONNX string properties (strings as they are, other values
    as JSON), and ``class_names`` as a JSON list when the model has them."""
    props = {}
    for key, value in (getattr(model, "metadata", None) or {}).items():
        if isinstance(value, str):
            props[str(key)] = value
            continue
        try:
            props[str(key)] = json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"export: model.metadata[{key!r}]: expected a JSON-serialisable "
                             f"value; got {type(value).__name__} ({exc})") from None
    class_names = getattr(model, "class_names", None)
    if class_names is not None:
        names = list(class_names)
        if not all(isinstance(n, str) for n in names):
            raise ValueError(f"export: model.class_names: expected a list of strings; got "
                             f"{class_names!r}")
        props["class_names"] = json.dumps(names)
    return props
