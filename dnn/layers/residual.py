"""Residual: a block of layers with a skip path around it, ``y = act(f(x) + skip(x))``,
as thinc's ``residual`` and the blocks of a ResNet. Through the skip path the gradient
reaches the early layers of a deep stack undiminished, which is what lets a ReLU MLP of
twenty layers or more train (He et al., 2016)."""
from __future__ import annotations

import collections

from .. import activations
from .base import INFERENCE, Layer, LayerViews
from .core import Dense
from .registry import layer_from_config, register

_PROJECTIONS = ("auto", True, False)


@register
class Residual(Layer):
    """``Residual(layers, activation=None, projection="auto")``: the ``layers`` in turn
    (``f``), plus the block's input (the skip path), then ``activation`` (anything
    ``dnn.activations.get`` takes). Where ``f`` changes the width, the skip path is a
    learned linear projection, a ``Dense`` without activation ("auto"; ``True`` always
    projects, ``False`` refuses a change of width).

    ``Residual([Dense(64, "relu"), Dense(64)], activation="relu")`` is the basic block of
    a ResNet; ``Residual([BatchNormalization(), Activation("relu"), Dense(64)])`` a
    pre-activation one. Usable wherever a layer is, inside ``Sequential`` too. The
    sublayers' weights live in the model's flat buffers like any layer's (in
    ``get_weights`` order: each sublayer's, then the projection's), named
    ``"<index>.<name>"`` and ``"projection.<name>"``.
    """

    # Each sublayer's retained values, the projection's (or None), and the sum before
    # the activation (or None when the activation needs only its output).
    # The sublayers' tape, the projection's retained values, and the sum before the
    # activation and its output (both None without an activation).
    Retained = collections.namedtuple("ResidualRetained", "tape skip total y")

    def __init__(self, layers, activation=None, projection="auto", name=None,
                 input_dim=None, input_shape=None):
        super().__init__(name, input_dim, input_shape)
        layers = list(layers) if isinstance(layers, (list, tuple)) else None
        if not layers or not all(isinstance(layer, Layer) for layer in layers):
            raise TypeError("Residual: layers: expected a non-empty list of dnn.layers.Layer")
        if not any(projection is p for p in _PROJECTIONS):
            raise ValueError(f"Residual: projection: expected 'auto', True or False; got "
                             f"{projection!r}")
        self.layers = layers
        self.projection_mode = projection
        self.projection = None  # the Dense of the skip path, once built, if any
        self.activation_function = activations.get(activation, "Residual: activation")
        self.averaged_state = ()

    @property
    def activation(self):
        return self.activation_function.name

    @property
    def sublayers(self):
        """The layers of ``f``, then the projection (if any)."""
        return self.layers + ([self.projection] if self.projection is not None else [])

    def build(self, input_dim):
        self._set_input_dim(input_dim)
        width = self.input_dim
        for layer in self.layers:
            width = layer.build(width)
        self.output_dim = width
        project = self.projection_mode is True or (self.projection_mode == "auto" and
                                                   width != self.input_dim)
        if not project and width != self.input_dim:
            raise ValueError(f"Residual: projection: expected 'auto' or True when the layers "
                             f"change the width; got False, and {self.input_dim} features "
                             f"in, {width} out")
        self.projection = Dense(width, name="projection") if project else None
        if self.projection is not None:
            self.projection.build(self.input_dim)
        self.param_shapes, self.state_shapes = [], []
        averaged = []
        for tag, layer in self._tagged():
            self.param_shapes += [(f"{tag}.{n}", s) for n, s in layer.param_shapes]
            self.state_shapes += [(f"{tag}.{n}", s) for n, s in layer.state_shapes]
            averaged += [f"{tag}.{n}" for n in layer.averaged_state]
        self.averaged_state = tuple(averaged)
        return self.output_dim

    def _tagged(self):
        """``(tag, layer)``: the sublayers' indices, then "projection"."""
        tags = [str(i) for i in range(len(self.layers))] + ["projection"]
        return list(zip(tags, self.sublayers))

    def initial_values(self, rng, dtype):
        params, state = [], []
        for layer in self.sublayers:  # drawn in order, each sublayer as it would alone
            values = layer.initial_values(rng, dtype)
            params += values[:len(layer.param_shapes)]
            state += values[len(layer.param_shapes):]
        return params + state

    def bind(self, backend, views, dtypes, buffers):
        super().bind(backend, views, dtypes, buffers)
        p = s = 0
        for layer in self.sublayers:
            n, m = len(layer.param_shapes), len(layer.state_shapes)
            layer.bind(backend, LayerViews(self.params[p:p + n], self.grads[p:p + n],
                                           self.state[s:s + m]), dtypes, buffers)
            p, s = p + n, s + m

    def regularized(self):
        out, offset = [], 0
        for layer in self.sublayers:
            out += [(offset + i, r) for i, r in layer.regularized()]
            offset += len(layer.param_shapes)
        return out

    def _make_workspace(self, n):
        be, dtype = self.backend, self.compute_dtype
        total = be.empty((n, self.output_dim), dtype)
        keeps_total = self.activation_function.kernel != "linear"
        return (total, be.empty((n, self.output_dim), dtype) if keeps_total else total,
                be.empty((n, self.output_dim), dtype))

    def forward(self, x, context=INFERENCE):
        be = self.backend
        total, y, _ = self._workspace(x.shape[0])
        out, tape = x, []
        for layer in self.layers:
            out, retained = layer.forward(out, context)
            tape.append(retained)
        skip, skipped = x, None
        if self.projection is not None:
            skip, skipped = self.projection.forward(x, context)
        be.add(out, skip, out=total)
        function = self.activation_function
        act = "linear" if self.emit_logits else function.kernel
        if act == "linear":
            return total, self.Retained(tape, skipped, None, None)
        be.activation(act, total, out=y, negative_slope=function.slope)
        return y, self.Retained(tape, skipped, total, y)

    def backward(self, dy, retained, need_dx=True):
        be = self.backend
        skip_grad = self._workspace(dy.shape[0])[2]
        function = self.activation_function
        grad = dy
        if retained.total is not None:
            grad = be.activation_backward(function.kernel, dy, retained.total, retained.y,
                                          out=dy, negative_slope=function.slope)
        # The sublayers may overwrite the gradient they are given: the skip path keeps
        # its own copy.
        be.copy(grad, out=skip_grad)
        for i in range(len(self.layers) - 1, -1, -1):
            grad = self.layers[i].backward(grad, retained.tape[i], need_dx=need_dx or i > 0)
        through_skip = skip_grad
        if self.projection is not None:
            through_skip = self.projection.backward(skip_grad, retained.skip, need_dx)
        if not need_dx:
            return None
        # Either the copy above or the projection's own input gradient: both are this
        # block's to overwrite, and of the input's width.
        return be.add(grad, through_skip, out=through_skip)

    def get_config(self):
        config = {**super().get_config(),
                  "layers": [layer.get_config() for layer in self.layers],
                  "activation": self.activation_function.get_config()}
        if self.projection_mode != "auto":
            config["projection"] = self.projection_mode
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layers"] = [layer_from_config(c) for c in config["layers"]]
        return cls(**config)

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in (
            ("activation", self.activation_function.get_config()),
            ("projection", self.projection_mode), ("name", self.name)) if v not in
            (None, "linear", "auto"))
        return f"Residual([{', '.join(repr(layer) for layer in self.layers)}]{extra})"

    def describe(self):
        act = self.activation_function
        return f"Residual({len(self.layers)} layers{'' if act.name == 'linear' else f', {act}'})"
