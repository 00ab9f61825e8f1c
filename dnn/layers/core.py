"""The core layers: Dense, Dropout, Activation and LeakyReLU."""
from __future__ import annotations

import collections
import math

import numpy

from .. import activations, initializers, regularizers
from ..backends import ACTIVATIONS_NEEDING_INPUT
from ..kernels.reference import LEAKY_RELU_LAYER_SLOPE
from ..utils.validation import check_number_in, check_positive_int
from .base import INFERENCE, Layer, name_suffix
from .registry import register

RELU_FAMILY = frozenset({"relu", "leaky_relu", "gelu"})
# A small positive bias keeps narrow ReLU layers alive at the start: on seed 002's
# 2-4-6-6-4-1 circles net, zero biases left 2 of 10 seeds with every unit dead
# (test accuracy 0.51); with 0.1 none died (median 0.99).
RELU_BIAS_INIT = 0.1


@register
class Dense(Layer):
    """Fully connected layer: ``activation(x @ kernel + bias)``.

    ``Dense(units, activation=None, kernel_initializer="auto", bias_initializer="auto",
    kernel_regularizer=None, bias_regularizer=None, input_dim=None, input_shape=None)``.
    kernel: ``(input_dim, units)``; bias: ``(units,)``. ``activation``: anything
    ``dnn.activations.get`` takes (a name, a function, a ``functools.partial`` with
    options such as leaky_relu's ``negative_slope``, a config dict); ``activation`` is
    then its name and ``activation_function`` the function with its options.
    Initializers by name (see ``dnn.initializers``); "auto", the default, draws the
    kernel He-normal (untruncated) for the ReLU family and Glorot-uniform otherwise, and
    starts ReLU biases at 0.1 and others at 0. Regularizers:
    ``dnn.regularizers.L1/L2/L1L2``, or "l1", "l2".
    """

    # The input, the pre-activation and the output (z itself when the activation's
    # gradient needs only its output).
    Retained = collections.namedtuple("DenseRetained", "x z y")

    def __init__(self, units, activation=None, kernel_initializer="auto",
                 bias_initializer="auto", kernel_regularizer=None, bias_regularizer=None,
                 input_dim=None, name=None, input_shape=None):
        super().__init__(name, input_dim, input_shape)
        self.units = check_positive_int(units, "Dense: units")
        for what, value in (("kernel_initializer", kernel_initializer),
                            ("bias_initializer", bias_initializer)):
            if value != "auto":
                initializers.check(value, f"Dense: {what}")
        self.activation = activation
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.kernel_regularizer = regularizers.get(kernel_regularizer, "Dense: kernel_regularizer")
        self.bias_regularizer = regularizers.get(bias_regularizer, "Dense: bias_regularizer")

    def build(self, input_dim):
        self._set_input_dim(input_dim)
        self.output_dim = self.units
        self.param_shapes = [("kernel", (self.input_dim, self.units)), ("bias", (self.units,))]
        return self.output_dim

    def initial_values(self, rng, dtype):
        fan_in, fan_out = self.input_dim, self.units
        shape = (fan_in, fan_out)
        if self.kernel_initializer == "auto":
            if self.activation in RELU_FAMILY:
                kernel = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
            else:
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                kernel = rng.uniform(-limit, limit, shape)
        else:
            kernel = initializers.get(self.kernel_initializer)(rng, shape, fan_in, fan_out)
        if self.bias_initializer == "auto":
            bias = numpy.full(fan_out, RELU_BIAS_INIT if self.activation == "relu" else 0.0)
        else:
            bias = initializers.get(self.bias_initializer)(rng, (fan_out,), fan_in, fan_out)
        return [kernel.astype(dtype), bias.astype(dtype)]

    def regularized(self):
        return [(i, r) for i, r in enumerate((self.kernel_regularizer, self.bias_regularizer))
                if r is not None]

    @property
    def kernel(self):
        return self.params[0]

    @property
    def bias(self):
        return self.params[1]

    activation = property(lambda self: self.activation_function.name,
                          lambda self, value: setattr(self, "activation_function",
                                                      activations.get(value)),
                          doc="The activation's name (Keras's); setting it takes anything "
                              "dnn.activations.get does.")

    def _make_workspace(self, n):
        be, dtype = self.backend, self.compute_dtype
        z = be.empty((n, self.units), dtype)
        keep_z = self.activation_function.kernel in ACTIVATIONS_NEEDING_INPUT
        y = be.empty((n, self.units), dtype) if keep_z else z
        dx = be.empty((n, self.input_dim), dtype)
        return z, y, dx

    def forward(self, x, context=INFERENCE):
        be = self.backend
        z, y, _ = self._workspace(x.shape[0])
        kernel, bias = self.params
        be.gemm(x, kernel, out=z)
        function = self.activation_function
        act = "linear" if self.emit_logits else function.kernel
        if y is z:
            be.bias_activation(z, bias, act, out=z, negative_slope=function.slope)
        else:  # the backward needs the pre-activation, so keep z and write y apart
            be.bias_activation(z, bias, "linear", out=z)
            be.activation(act, z, out=y, negative_slope=function.slope)
        return y, self.Retained(x, z, y)

    def backward(self, dy, retained, need_dx=True):
        be = self.backend
        function = self.activation_function
        act = "linear" if self.emit_logits else function.kernel
        dz = be.activation_backward(act, dy, retained.z, retained.y, out=dy,
                                    negative_slope=function.slope)
        be.gemm(retained.x, dz, trans_a=True, out=self.grads[0])
        be.column_sum(dz, out=self.grads[1])
        if not need_dx:
            return None
        _, _, dx = self._workspace(dz.shape[0])
        return be.gemm(dz, self.params[0], trans_b=True, out=dx)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": self.activation_function.get_config(),
                "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer,
                "kernel_regularizer": _regularizer_config(self.kernel_regularizer),
                "bias_regularizer": _regularizer_config(self.bias_regularizer)}

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in (
            ("kernel_initializer", self.kernel_initializer),
            ("bias_initializer", self.bias_initializer),
            ("kernel_regularizer", self.kernel_regularizer),
            ("bias_regularizer", self.bias_regularizer),
            ("input_dim", self.declared_input_dim),
            ("name", self.name)) if v not in (None, "auto"))
        return f"Dense({self.units}, activation={self.activation_function.get_config()!r}{extra})"

    def describe(self):
        return f"Dense({self.units}, {self.activation_function})"


def _regularizer_config(regularizer):
    return None if regularizer is None else regularizer.get_config()


@register
class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and
    scale the rest by ``1/(1-rate)``; identity at inference.

    The mask of step ``s`` is a pure function of (model seed, layer position, s), so a
    resumed run draws exactly the masks the uninterrupted run would have; a batch whose
    rows start at ``context.row_offset`` of the step's global batch draws those rows of
    the mask.
    """

    # The mask applied, or None when the forward pass dropped nothing.
    Retained = collections.namedtuple("DropoutRetained", "mask")
    _KEPT_ALL = Retained(None)

    def __init__(self, rate, name=None, input_dim=None, input_shape=None):
        super().__init__(name, input_dim, input_shape)
        self.rate = check_number_in(rate, "Dropout: rate", 0, 1, "[)")
        self.seed = 0  # set by the model from its seed and this layer's position

    def _make_workspace(self, n):
        return self.backend.empty((n, self.output_dim), self.compute_dtype), \
            self.backend.empty((n, self.output_dim), self.compute_dtype)

    def forward(self, x, context=INFERENCE):
        if not (context.training and self.rate > 0):
            return x, self._KEPT_ALL
        be = self.backend
        mask, y = self._workspace(x.shape[0])
        be.dropout_mask(x.shape, self.rate, self.seed, context.iterations, dtype=mask.dtype,
                        out=mask, offset=context.row_offset * x.shape[1])
        return be.multiply(x, mask, out=y), self.Retained(mask)

    def backward(self, dy, retained, need_dx=True):
        if not need_dx:
            return None
        if retained.mask is None:
            return dy
        return self.backend.multiply(dy, retained.mask, out=dy)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}

    def __repr__(self):
        return f"Dropout({self.rate:g}{name_suffix(self)})"

    def describe(self):
        return f"Dropout({self.rate:g})"


@register
class Activation(Layer):
    """Applies an activation on its own, as ``keras.layers.Activation``: ``activation``
    is anything ``dnn.activations.get`` takes."""

    Retained = collections.namedtuple("ActivationRetained", "x y")

    def __init__(self, activation, name=None, input_dim=None, input_shape=None):
        super().__init__(name, input_dim, input_shape)
        self.activation = activation

    activation = Dense.activation

    def _make_workspace(self, n):
        return self.backend.empty((n, self.output_dim), self.compute_dtype)

    def forward(self, x, context=INFERENCE):
        function = self.activation_function
        y = self.backend.activation(function.kernel, x, out=self._workspace(x.shape[0]),
                                    negative_slope=function.slope)
        return y, self.Retained(x, y)

    def backward(self, dy, retained, need_dx=True):
        if not need_dx:
            return None
        function = self.activation_function
        return self.backend.activation_backward(function.kernel, dy, retained.x, retained.y,
                                                out=dy, negative_slope=function.slope)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation_function.get_config()}

    def __repr__(self):
        return f"Activation({self.activation_function.get_config()!r}{name_suffix(self)})"

    def describe(self):
        return f"Activation({self.activation_function})"


@register
class LeakyReLU(Activation):
    """``LeakyReLU(negative_slope=0.3)``, as ``keras.layers.LeakyReLU``: ``x`` where
    positive, ``negative_slope * x`` elsewhere; the slope must be >= 0."""

    def __init__(self, negative_slope=LEAKY_RELU_LAYER_SLOPE, name=None, input_dim=None,
                 input_shape=None):
        function = activations.get({"name": "leaky_relu", "negative_slope": negative_slope},
                                   "LeakyReLU")
        super().__init__(function, name, input_dim, input_shape)

    @property
    def negative_slope(self):
        return self.activation_function.slope

    def get_config(self):
        config = Layer.get_config(self)
        return {**config, "negative_slope": self.negative_slope}

    def __repr__(self):
        return f"LeakyReLU(negative_slope={self.negative_slope!r}{name_suffix(self)})"

    def describe(self):
        return f"LeakyReLU({self.negative_slope:g})"
