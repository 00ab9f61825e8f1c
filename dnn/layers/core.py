"""The core layers: Dense, Dropout and Activation."""
from __future__ import annotations

import collections
import math

import numpy

from .. import initializers, regularizers
from ..backends import ACTIVATIONS_NEEDING_INPUT, check_activation
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
    kernel_regularizer=None, bias_regularizer=None, input_dim=None)``. kernel:
    ``(input_dim, units)``; bias: ``(units,)``. Initializers by name (see
    ``dnn.initializers``); "auto", the default, draws the kernel He-normal (untruncated)
    for the ReLU family and Glorot-uniform otherwise, and starts ReLU biases at 0.1 and
    others at 0. Regularizers: ``dnn.regularizers.L1/L2/L1L2``, or "l1", "l2".
    """

    # The input, the pre-activation and the output (z itself when the activation's
    # gradient needs only its output).
    Retained = collections.namedtuple("DenseRetained", "x z y")

    def __init__(self, units, activation=None, kernel_initializer="auto",
                 bias_initializer="auto", kernel_regularizer=None, bias_regularizer=None,
                 input_dim=None, name=None):
        super().__init__(name, input_dim)
        self.units = check_positive_int(units, "Dense: units")
        for what, value in (("kernel_initializer", kernel_initializer),
                            ("bias_initializer", bias_initializer)):
            if value != "auto":
                initializers.check(value, f"Dense: {what}")
        self.activation = check_activation(activation)
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

    def _make_workspace(self, n):
        be, dtype = self.backend, self.compute_dtype
        z = be.empty((n, self.units), dtype)
        keep_z = self.activation in ACTIVATIONS_NEEDING_INPUT
        y = be.empty((n, self.units), dtype) if keep_z else z
        dx = be.empty((n, self.input_dim), dtype)
        return z, y, dx

    def forward(self, x, context=INFERENCE):
        be = self.backend
        z, y, _ = self._workspace(x.shape[0])
        kernel, bias = self.params
        be.gemm(x, kernel, out=z)
        act = "linear" if self.emit_logits else self.activation
        if y is z:
            be.bias_activation(z, bias, act, out=z)
        else:  # the backward needs the pre-activation, so keep z and write y apart
            be.bias_activation(z, bias, "linear", out=z)
            be.activation(act, z, out=y)
        return y, self.Retained(x, z, y)

    def backward(self, dy, retained, need_dx=True):
        be = self.backend
        act = "linear" if self.emit_logits else self.activation
        dz = be.activation_backward(act, dy, retained.z, retained.y, out=dy)
        be.gemm(retained.x, dz, trans_a=True, out=self.grads[0])
        be.column_sum(dz, out=self.grads[1])
        if not need_dx:
            return None
        _, _, dx = self._workspace(dz.shape[0])
        return be.gemm(dz, self.params[0], trans_b=True, out=dx)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
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
        return f"Dense({self.units}, activation={self.activation!r}{extra})"

    def describe(self):
        return f"Dense({self.units}, {self.activation})"


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

    def __init__(self, rate, name=None, input_dim=None):
        super().__init__(name, input_dim)
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
    """Applies an activation on its own, as ``keras.layers.Activation``."""

    Retained = collections.namedtuple("ActivationRetained", "x y")

    def __init__(self, activation, name=None, input_dim=None):
        super().__init__(name, input_dim)
        self.activation = check_activation(activation)

    def _make_workspace(self, n):
        return self.backend.empty((n, self.output_dim), self.compute_dtype)

    def forward(self, x, context=INFERENCE):
        y = self.backend.activation(self.activation, x, out=self._workspace(x.shape[0]))
        return y, self.Retained(x, y)

    def backward(self, dy, retained, need_dx=True):
        if not need_dx:
            return None
        return self.backend.activation_backward(self.activation, dy, retained.x, retained.y,
                                                out=dy)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}

    def __repr__(self):
        return f"Activation({self.activation!r}{name_suffix(self)})"

    def describe(self):
        return f"Activation({self.activation})"
