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
- BatchNormalization: ``(x - moving_mean) * scale + beta`` with
  ``scale = gamma / sqrt(moving_variance + epsilon)`` computed in float64;
- LayerNormalization: ``LayerNormalization(axis=-1, epsilon)``;
- Normalization: ``(x - mean) / max(sqrt(variance), NORMALIZATION_EPSILON)``.

Activations: Relu, LeakyRelu (alpha ``LEAKY_RELU_ALPHA``), Sigmoid, Tanh, Softmax
(axis -1), nothing for linear, and gelu's tanh approximation composed from Mul, Add and
Tanh with the constants of ``dnn.kernels.reference``.
"""
from __future__ import annotations

import json

import numpy

from ..kernels.reference import GELU_C, GELU_K, LEAKY_RELU_ALPHA, NORMALIZATION_EPSILON
from ..layers import (
    Activation,
    BatchNormalization,
    Dense,
    Dropout,
    LayerNormalization,
    Normalization,
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
        x = _export_layer(graph, i, layer, weights.get(id(layer), {}), x)
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


def _export_layer(graph, i, layer, weights, x):
    """Append layer ``i``'s nodes reading tensor ``x``; returns the output tensor."""
    prefix = f"layers.{i}"
    kind = type(layer)
    if kind is Dense:
        kernel = graph.constant(f"{prefix}.kernel", weights["kernel"])
        bias = graph.constant(f"{prefix}.bias", weights["bias"])
        z = graph.node("Gemm", [x, kernel, bias], f"{prefix}.gemm")
        # Always the layer's activation: emit_logits only concerns the training loss.
        return _export_activation(graph, i, layer, layer.activation, z)
    if kind is Dropout:
        return x
    if kind is Activation:
        return _export_activation(graph, i, layer, layer.activation, x)
    if kind is BatchNormalization:
        scale = weights["gamma"] / numpy.sqrt(weights["moving_variance"] + layer.epsilon)
        mean = graph.constant(f"{prefix}.moving_mean", weights["moving_mean"])
        scale = graph.constant(f"{prefix}.scale", scale)
        beta = graph.constant(f"{prefix}.beta", weights["beta"])
        centred = graph.node("Sub", [x, mean], f"{prefix}.sub")
        scaled = graph.node("Mul", [centred, scale], f"{prefix}.mul")
        return graph.node("Add", [scaled, beta], f"{prefix}.add")
    if kind is LayerNormalization:
        gamma = graph.constant(f"{prefix}.gamma", weights["gamma"])
        beta = graph.constant(f"{prefix}.beta", weights["beta"])
        return graph.node("LayerNormalization", [x, gamma, beta], f"{prefix}.layer_norm",
                          axis=-1, epsilon=layer.epsilon)
    if kind is Normalization:
        # The floor as in kernels.reference.standardize: a constant feature maps to 0.
        divisor = numpy.maximum(numpy.sqrt(weights["variance"]), NORMALIZATION_EPSILON)
        mean = graph.constant(f"{prefix}.mean", weights["mean"])
        divisor = graph.constant(f"{prefix}.divisor", divisor)
        centred = graph.node("Sub", [x, mean], f"{prefix}.sub")
        return graph.node("Div", [centred, divisor], f"{prefix}.div")
    exportable = ", ".join(cls.__name__ for cls in _EXPORTABLE_LAYERS)
    raise ValueError(f"export: model.layers[{i}]: cannot export a {kind.__name__} layer to "
                     f"ONNX; expected one of {exportable}")


_EXPORTABLE_LAYERS = (Dense, Dropout, Activation, BatchNormalization, LayerNormalization,
                      Normalization)

_ELEMENTWISE = {"relu": ("Relu", {}), "sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}),
                "leaky_relu": ("LeakyRelu", {"alpha": LEAKY_RELU_ALPHA}),
                "softmax": ("Softmax", {"axis": -1})}


def _export_activation(graph, i, layer, activation, x):
    prefix = f"layers.{i}.{activation}"
    if activation == "linear":
        return x
    if activation in _ELEMENTWISE:
        op_type, attributes = _ELEMENTWISE[activation]
        return graph.node(op_type, [x], prefix, **attributes)
    if activation == "gelu":
        # 0.5 * x * (1 + tanh(k * (x + c * x^3))), in the order kernels.reference computes
        # it. (ONNX's Gelu operator needs opset 20; see OPSET.)
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
    raise ValueError(f"export: model.layers[{i}] ({layer.describe()}): activation: cannot "
                     f"export {activation!r} to ONNX; expected one of linear, gelu, "
                     f"{', '.join(_ELEMENTWISE)}")


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
