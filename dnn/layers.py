"""Layers: Dense, Dropout and Activation.

A layer declares its parameter shapes; the model owns one flat parameter buffer and
one flat gradient buffer and hands each layer views into them (``bind``). A layer's
workspaces come from the model's buffer cache, per batch size, so that a training step
allocates nothing after its first call with a given batch size. All array work goes
through ``self.backend``.

Shapes: inputs and outputs are ``(batch, features)``.
"""
from __future__ import annotations

import math

import numpy

from .backends import ACTIVATIONS_NEEDING_INPUT, check_activation

RELU_FAMILY = frozenset({"relu", "leaky_relu", "gelu"})
# A small positive bias keeps narrow ReLU layers alive at the start: on seed 002's
# 2-4-6-6-4-1 circles net, zero biases left 2 of 10 seeds with every unit dead
# (test accuracy 0.51); with 0.1 none died (median 0.99).
RELU_BIAS_INIT = 0.1
INITIALIZERS = ("auto", "he_uniform", "he_normal", "glorot_uniform", "glorot_normal", "zeros")


class Layer:
    """Base class. Subclasses set ``param_shapes`` in ``build`` and implement
    ``forward``/``backward``."""

    def __init__(self, name=None):
        self.name = name
        self.backend = None
        self.dtype = None  # the compute dtype, set by bind
        self.input_dim = None
        self.output_dim = None
        self.param_shapes = []  # [(name, shape)] in get_weights order
        self.params = []  # views into the model's flat parameter buffer
        self.grads = []  # views into the model's flat gradient buffer
        self._buffers = None  # the model's BufferCache
        # Set by the model when the loss consumes logits (softmax/sigmoid fused into the
        # loss): the output layer then stops before its activation.
        self.emit_logits = False

    def build(self, input_dim):
        """Fix the input width; returns the output width."""
        self.input_dim = self.output_dim = int(input_dim)
        return self.output_dim

    def initial_values(self, rng, dtype):
        """Host NumPy arrays for the parameters, drawn from ``rng``."""
        return []

    def bind(self, backend, params, grads, dtype, buffers):
        """Attach the layer to the model: its parameter and gradient views, the compute
        dtype, and the model's per-batch-size buffer cache."""
        self.backend = backend
        self.dtype = dtype
        self.params = list(params)
        self.grads = list(grads)
        self._buffers = buffers

    def _workspace(self, n):
        """This layer's workspaces for a batch of ``n`` rows (``_make_workspace``)."""
        return self._buffers.get(n, self, self._make_workspace)

    def _make_workspace(self, n):
        return None

    def forward(self, x, training=False, step=0):
        raise NotImplementedError

    def backward(self, dy, need_dx=True):
        """Given dL/d(output), fill this layer's gradient views and return dL/d(input)
        (or None when ``need_dx`` is False). May overwrite ``dy``."""
        raise NotImplementedError

    def get_config(self):
        return {"class_name": type(self).__name__, "name": self.name}

    def describe(self):
        return type(self).__name__


class Dense(Layer):
    """Fully connected layer: ``activation(x @ kernel + bias)``.

    kernel: ``(input_dim, units)``; bias: ``(units,)``. With ``kernel_initializer="auto"``
    the kernel is He-normal for the ReLU family and Glorot-uniform otherwise; ReLU
    biases start at 0.1, others at 0.
    """

    def __init__(self, units, activation=None, kernel_initializer="auto", name=None):
        super().__init__(name)
        if isinstance(units, bool) or not isinstance(units, (int, numpy.integer)) or units <= 0:
            raise ValueError(f"Dense: units: expected a positive integer; got {units!r}")
        if kernel_initializer not in INITIALIZERS:
            raise ValueError(f"Dense: kernel_initializer: expected one of "
                             f"{', '.join(INITIALIZERS)}; got {kernel_initializer!r}")
        self.units = int(units)
        self.activation = check_activation(activation)
        self.kernel_initializer = kernel_initializer
        self._x = self._z = self._y = None  # the last forward's input, pre-activation, output

    def build(self, input_dim):
        self.input_dim = int(input_dim)
        self.output_dim = self.units
        self.param_shapes = [("kernel", (self.input_dim, self.units)), ("bias", (self.units,))]
        return self.output_dim

    def initial_values(self, rng, dtype):
        fan_in, fan_out = self.input_dim, self.units
        scheme = self.kernel_initializer
        if scheme == "auto":
            scheme = "he_normal" if self.activation in RELU_FAMILY else "glorot_uniform"
        shape = (fan_in, fan_out)
        if scheme == "he_uniform":
            limit = math.sqrt(6.0 / fan_in)
            kernel = rng.uniform(-limit, limit, shape)
        elif scheme == "he_normal":
            kernel = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
        elif scheme == "glorot_uniform":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            kernel = rng.uniform(-limit, limit, shape)
        elif scheme == "glorot_normal":
            kernel = rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape)
        else:
            kernel = numpy.zeros(shape)
        bias = numpy.full(fan_out, RELU_BIAS_INIT if self.activation == "relu" else 0.0, dtype)
        return [kernel.astype(dtype), bias]

    @property
    def kernel(self):
        return self.params[0]

    @property
    def bias(self):
        return self.params[1]

    def _make_workspace(self, n):
        be, dtype = self.backend, self.dtype
        z = be.empty((n, self.units), dtype)
        keep_z = self.activation in ACTIVATIONS_NEEDING_INPUT
        y = be.empty((n, self.units), dtype) if keep_z else z
        dx = be.empty((n, self.input_dim), dtype)
        return z, y, dx

    def forward(self, x, training=False, step=0):
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
        self._x, self._z, self._y = x, z, y
        return y

    def backward(self, dy, need_dx=True):
        be = self.backend
        act = "linear" if self.emit_logits else self.activation
        dz = be.activation_backward(act, dy, self._z, self._y, out=dy)
        be.gemm(self._x, dz, trans_a=True, out=self.grads[0])
        be.column_sum(dz, out=self.grads[1])
        if not need_dx:
            return None
        _, _, dx = self._workspace(dz.shape[0])
        return be.gemm(dz, self.params[0], trans_b=True, out=dx)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": self.activation, "kernel_initializer": self.kernel_initializer}

    def describe(self):
        return f"Dense({self.units}, {self.activation})"


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and
    scale the rest by ``1/(1-rate)``; identity at inference.

    The mask of step ``s`` is a pure function of (model seed, layer position, s), so a
    resumed run draws exactly the masks the uninterrupted run would have.
    """

    def __init__(self, rate, name=None):
        super().__init__(name)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"Dropout: rate: expected a number in [0, 1); got {rate!r}")
        self.rate = float(rate)
        self.seed = 0  # set by the model from its seed and this layer's position
        self._active = False  # whether the last forward dropped anything
        self._mask = None

    def _make_workspace(self, n):
        return self.backend.empty((n, self.output_dim), self.dtype), \
            self.backend.empty((n, self.output_dim), self.dtype)

    def forward(self, x, training=False, step=0):
        self._active = training and self.rate > 0
        if not self._active:
            return x
        be = self.backend
        mask, y = self._workspace(x.shape[0])
        be.dropout_mask(x.shape, self.rate, self.seed, step, dtype=mask.dtype, out=mask)
        self._mask = mask
        return be.multiply(x, mask, out=y)

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        if not self._active:
            return dy
        return self.backend.multiply(dy, self._mask, out=dy)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}

    def describe(self):
        return f"Dropout({self.rate:g})"


class Activation(Layer):
    """Applies an activation on its own, as ``keras.layers.Activation``."""

    def __init__(self, activation, name=None):
        super().__init__(name)
        self.activation = check_activation(activation)
        self._x = self._y = None  # the last forward's input and output

    def _make_workspace(self, n):
        return self.backend.empty((n, self.output_dim), self.dtype)

    def forward(self, x, training=False, step=0):
        y = self._workspace(x.shape[0])
        self._x = x
        self._y = self.backend.activation(self.activation, x, out=y)
        return self._y

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        return self.backend.activation_backward(self.activation, dy, self._x, self._y, out=dy)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}

    def describe(self):
        return f"Activation({self.activation})"


LAYER_CLASSES = {cls.__name__: cls for cls in (Dense, Dropout, Activation)}


def layer_from_config(config):
    config = dict(config)
    cls_name = config.pop("class_name", None)
    cls = LAYER_CLASSES.get(cls_name)
    if cls is None:
        raise ValueError(f"layer config: class_name: expected one of "
                         f"{', '.join(LAYER_CLASSES)}; got {cls_name!r}")
    return cls(**config)
