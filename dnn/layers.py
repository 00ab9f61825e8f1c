"""Layers: Dense, Dropout, Activation, BatchNormalization, LayerNormalization and
Normalization.

A layer declares the shapes of its trainable weights (``param_shapes``) and of its
non-trainable ones (``state_shapes``: moving statistics); the model owns the flat buffers
and hands each layer views into them (``bind``). A layer's workspaces come from the
model's buffer cache, per batch size, so that a training step allocates nothing after
its first call with a given batch size. All array work goes through ``self.backend``.

Training or inference reaches every layer through one flag, ``forward(x, training)``:
Dropout drops and BatchNormalization uses the batch's statistics only in training.

Shapes: inputs and outputs are ``(batch, features)``.
"""
from __future__ import annotations

import math

import numpy

from . import initializers, regularizers
from .backends import ACTIVATIONS_NEEDING_INPUT, check_activation
from .validation import check_positive_int, check_positive_number

RELU_FAMILY = frozenset({"relu", "leaky_relu", "gelu"})
# A small positive bias keeps narrow ReLU layers alive at the start: on seed 002's
# 2-4-6-6-4-1 circles net, zero biases left 2 of 10 seeds with every unit dead
# (test accuracy 0.51); with 0.1 none died (median 0.99).
RELU_BIAS_INIT = 0.1


class Layer:
    """Base class. Subclasses set ``param_shapes`` (and ``state_shapes``) in ``build``
    and implement ``forward``/``backward``. ``input_dim`` on the first layer of a model
    gives the model its input width (as Keras' ``input_dim``)."""

    def __init__(self, name=None, input_dim=None):
        self.name = name
        self.backend = None
        self.dtype = None  # the compute dtype, set by bind
        self.stats_dtype = None  # the weight dtype, for statistics (set by bind)
        self.input_dim = None if input_dim is None else check_positive_int(
            input_dim, f"{type(self).__name__}: input_dim")
        self.declared_input_dim = self.input_dim  # as given: saved, and checked at build
        self.output_dim = None
        self.param_shapes = []  # [(name, shape)] trainable, in get_weights order
        self.state_shapes = []  # [(name, shape)] non-trainable, after the trainable ones
        self.params = []  # views into the model's flat parameter buffer (compute dtype)
        self.grads = []  # views into the model's flat gradient buffer
        self.state = []  # views into the model's flat state buffer
        self._buffers = None  # the model's BufferCache
        self._last_workspace = (None, None)  # (rows, workspace): the size asked last
        # Set by the model when the loss consumes logits (softmax/sigmoid fused into the
        # loss): the output layer then stops before its activation.
        self.emit_logits = False

    def build(self, input_dim):
        """Fix the input width; returns the output width."""
        self._set_input_dim(input_dim)
        self.output_dim = self.input_dim
        return self.output_dim

    def _set_input_dim(self, input_dim):
        declared = self.declared_input_dim
        if declared is not None and declared != int(input_dim):
            raise ValueError(f"{type(self).__name__}: input_dim: expected {declared} (as "
                             f"declared); got {int(input_dim)} from the layer before it")
        self.input_dim = int(input_dim)

    def initial_values(self, rng, dtype):
        """Host NumPy arrays for the trainable weights then the state, from ``rng``."""
        return []

    def bind(self, backend, params, grads, state, dtype, buffers):
        """Attach the layer to the model: its weight, gradient and state views, the
        compute dtype, and the model's per-batch-size buffer cache."""
        self.backend = backend
        self.dtype = dtype
        self.params, self.grads, self.state = list(params), list(grads), list(state)
        weights = self.grads + self.state
        self.stats_dtype = weights[0].dtype if weights else dtype
        self._buffers = buffers
        self._last_workspace = (None, None)

    def regularized(self):
        """``[(param index, Regularizer)]`` of the weights whose penalty joins the loss."""
        return []

    def _workspace(self, n):
        """This layer's workspaces for a batch of ``n`` rows (``_make_workspace``). The
        size asked last is answered without the cache: a tiny model's step asks about
        ten times, and the lookups were 5% of it."""
        rows, workspace = self._last_workspace
        if rows != n:
            workspace = self._buffers.get(n, self, self._make_workspace)
            self._last_workspace = (n, workspace)
        return workspace

    def _make_workspace(self, n):
        return None

    def forward(self, x, training=False, step=0):
        """The layer's output for a batch. ``training`` selects the training behaviour;
        ``step`` (the device step count) keys dropout masks."""
        raise NotImplementedError

    def backward(self, dy, need_dx=True):
        """Given dL/d(output), fill this layer's gradient views and return dL/d(input)
        (or None when ``need_dx`` is False). May overwrite ``dy``."""
        raise NotImplementedError

    def get_config(self):
        config = {"class_name": type(self).__name__, "name": self.name}
        if self.declared_input_dim is not None:
            config["input_dim"] = self.declared_input_dim
        return config

    def describe(self):
        return type(self).__name__

    def __repr__(self):
        config = {k: v for k, v in self.get_config().items()
                  if k != "class_name" and v is not None}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in config.items())})"


class Dense(Layer):
    """Fully connected layer: ``activation(x @ kernel + bias)``.

    ``Dense(units, activation=None, kernel_initializer="auto", bias_initializer="auto",
    kernel_regularizer=None, bias_regularizer=None, input_dim=None)``. kernel:
    ``(input_dim, units)``; bias: ``(units,)``. Initializers by name (see
    ``dnn.initializers``); "auto", the default, draws the kernel He-normal (untruncated)
    for the ReLU family and Glorot-uniform otherwise, and starts ReLU biases at 0.1 and
    others at 0. Regularizers: ``dnn.regularizers.L1/L2/L1L2``, or "l1", "l2".
    """

    def __init__(self, units, activation=None, kernel_initializer="auto",
                 bias_initializer="auto", kernel_regularizer=None, bias_regularizer=None,
                 input_dim=None, name=None):
        super().__init__(name, input_dim)
        if isinstance(units, bool) or not isinstance(units, (int, numpy.integer)) or units <= 0:
            raise ValueError(f"Dense: units: expected a positive integer; got {units!r}")
        for what, value in (("kernel_initializer", kernel_initializer),
                            ("bias_initializer", bias_initializer)):
            if value != "auto":
                initializers.check(value, f"Dense: {what}")
        self.units = int(units)
        self.activation = check_activation(activation)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.kernel_regularizer = regularizers.get(kernel_regularizer, "Dense: kernel_regularizer")
        self.bias_regularizer = regularizers.get(bias_regularizer, "Dense: bias_regularizer")
        self._x = self._z = self._y = None  # the last forward's input, pre-activation, output

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


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and
    scale the rest by ``1/(1-rate)``; identity at inference.

    The mask of step ``s`` is a pure function of (model seed, layer position, s), so a
    resumed run draws exactly the masks the uninterrupted run would have.
    """

    def __init__(self, rate, name=None, input_dim=None):
        super().__init__(name, input_dim)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"Dropout: rate: expected a number in [0, 1); got {rate!r}")
        self.rate = float(rate)
        self.seed = 0  # set by the model from its seed and this layer's position
        # Where this batch's rows start in the step's global batch (data-parallel
        # training sets it per rank): rank r draws rows r.. of the one-rank mask.
        self.row_offset = 0
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
        be.dropout_mask(x.shape, self.rate, self.seed, step, dtype=mask.dtype, out=mask,
                        offset=self.row_offset * x.shape[1])
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

    def __repr__(self):
        return f"Dropout({self.rate:g}{_name_suffix(self)})"

    def describe(self):
        return f"Dropout({self.rate:g})"


def _name_suffix(layer):
    return "" if layer.name is None else f", name={layer.name!r}"


class Activation(Layer):
    """Applies an activation on its own, as ``keras.layers.Activation``."""

    def __init__(self, activation, name=None, input_dim=None):
        super().__init__(name, input_dim)
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

    def __repr__(self):
        return f"Activation({self.activation!r}{_name_suffix(self)})"

    def describe(self):
        return f"Activation({self.activation})"


class BatchNormalization(Layer):
    """``BatchNormalization(momentum=0.99, epsilon=1e-3)``, as Keras: in training, each
    feature is normalized with the batch's mean and (biased) variance, then scaled by
    ``gamma`` and shifted by ``beta``, and the moving statistics move towards the
    batch's (``moving = moving * momentum + batch * (1 - momentum)``); at inference
    (predict, evaluate, validation) the moving statistics are used. The moving
    statistics are non-trainable weights: saved with the model, restored on load."""

    def __init__(self, momentum=0.99, epsilon=1e-3, name=None, input_dim=None):
        super().__init__(name, input_dim)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or \
                not 0 <= momentum <= 1:
            raise ValueError(f"BatchNormalization: momentum: expected a number in [0, 1]; "
                             f"got {momentum!r}")
        self.momentum = float(momentum)
        self.epsilon = check_positive_number(epsilon, "BatchNormalization: epsilon")
        # The last forward's normalized input and variance (the batch's in training, the
        # moving one at inference), and which it was: for the backward pass.
        self._xhat = self._var = None
        self._batch = False

    def build(self, input_dim):
        super().build(input_dim)
        features = (self.input_dim,)
        self.param_shapes = [("gamma", features), ("beta", features)]
        self.state_shapes = [("moving_mean", features), ("moving_variance", features)]
        return self.output_dim

    def initial_values(self, rng, dtype):
        ones, zeros = numpy.ones(self.input_dim, dtype), numpy.zeros(self.input_dim, dtype)
        return [ones, zeros, zeros.copy(), ones.copy()]

    def _make_workspace(self, n):
        be = self.backend
        shape = (n, self.input_dim)
        return (be.empty(shape, self.dtype), be.empty(shape, self.dtype),
                be.empty(shape, self.stats_dtype), be.empty((self.input_dim,), self.stats_dtype))

    def forward(self, x, training=False, step=0):
        be = self.backend
        y, xhat, scratch, var = self._workspace(x.shape[0])
        gamma, beta = self.params
        moving_mean, moving_var = self.state
        self._batch = training
        if not training:
            self._xhat, self._var = xhat, moving_var
            return be.batch_norm_inference(x, gamma, beta, moving_mean, moving_var,
                                           self.epsilon, y, xhat)
        be.batch_norm_forward(x, gamma, beta, self.epsilon, y, xhat, var, moving_mean,
                              moving_var, self.momentum, scratch)
        self._xhat, self._var = xhat, var
        return y

    def backward(self, dy, need_dx=True):
        _, _, scratch, _ = self._workspace(dy.shape[0])
        dx = self.backend.batch_norm_backward(dy, self._xhat, self.params[0], self._var,
                                              self.epsilon, self.grads[0], self.grads[1], dy,
                                              scratch, self._batch)
        return dx if need_dx else None

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}

    def describe(self):
        return "BatchNormalization"


class LayerNormalization(Layer):
    """``LayerNormalization(epsilon=1e-3)``, as Keras: each sample is normalized over
    its features, then scaled by ``gamma`` and shifted by ``beta`` (per feature); the
    same in training and at inference."""

    def __init__(self, epsilon=1e-3, name=None, input_dim=None):
        super().__init__(name, input_dim)
        self.epsilon = check_positive_number(epsilon, "LayerNormalization: epsilon")
        self._xhat = self._rstd = None

    def build(self, input_dim):
        super().build(input_dim)
        self.param_shapes = [("gamma", (self.input_dim,)), ("beta", (self.input_dim,))]
        return self.output_dim

    def initial_values(self, rng, dtype):
        return [numpy.ones(self.input_dim, dtype), numpy.zeros(self.input_dim, dtype)]

    def _make_workspace(self, n):
        be = self.backend
        shape = (n, self.input_dim)
        return (be.empty(shape, self.dtype), be.empty(shape, self.dtype),
                be.empty(shape, self.stats_dtype), be.empty((n,), self.stats_dtype))

    def forward(self, x, training=False, step=0):
        y, xhat, _, rstd = self._workspace(x.shape[0])
        gamma, beta = self.params
        self.backend.layer_norm_forward(x, gamma, beta, self.epsilon, y, xhat, rstd)
        self._xhat, self._rstd = xhat, rstd
        return y

    def backward(self, dy, need_dx=True):
        _, _, scratch, _ = self._workspace(dy.shape[0])
        dx = self.backend.layer_norm_backward(dy, self._xhat, self.params[0], self._rstd,
                                              self.grads[0], self.grads[1], dy, scratch)
        return dx if need_dx else None

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}

    def describe(self):
        return "LayerNormalization"


class Normalization(Layer):
    """Feature standardization inside the model, as Keras' ``Normalization``:
    ``(x - mean) / max(sqrt(variance), 1e-7)`` per feature, with the mean and variance
    set by ``adapt(x)`` (or given). They are non-trainable weights, saved with the
    model, so a model trained on raw features predicts on raw features.

    ``Normalization(mean=None, variance=None, input_dim=None)``.
    """

    def __init__(self, mean=None, variance=None, name=None, input_dim=None):
        super().__init__(name, input_dim)
        if (mean is None) != (variance is None):
            raise ValueError("Normalization: expected both mean and variance, or neither; "
                             f"got mean={mean!r}, variance={variance!r}")
        self._given = None if mean is None else (numpy.asarray(mean, numpy.float64).ravel(),
                                                  numpy.asarray(variance, numpy.float64).ravel())

    def build(self, input_dim):
        super().build(input_dim)
        if self._given is not None:
            for what, values in zip(("mean", "variance"), self._given):
                if values.size not in (1, self.input_dim):
                    raise ValueError(f"Normalization: {what}: expected 1 or {self.input_dim} "
                                     f"values (the input width); got {values.size}")
        self.state_shapes = [("mean", (self.input_dim,)), ("variance", (self.input_dim,))]
        return self.output_dim

    def initial_values(self, rng, dtype):
        if self._given is None:
            return [numpy.zeros(self.input_dim, dtype), numpy.ones(self.input_dim, dtype)]
        return [numpy.broadcast_to(v, (self.input_dim,)).astype(dtype) for v in self._given]

    def adapt(self, data):
        """Set the mean and variance from ``data`` (samples, features): host data or
        this backend's arrays. The layer must be in a built model (one whose input
        width is known), or have been given ``input_dim``."""
        be = self.backend
        host = be.to_numpy(data) if be is not None and be.is_native(data) else data
        x = numpy.asarray(host, dtype=numpy.float64)
        if x.ndim == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"Normalization.adapt: data: expected a 2-D array with at least "
                             f"one sample; got shape {x.shape}")
        if not numpy.isfinite(x).all():
            raise ValueError("Normalization.adapt: data: expected finite values")
        mean, variance = x.mean(axis=0), x.var(axis=0)
        self._given = (mean, variance)
        if self.state:  # built: write the statistics into the model's weights
            if x.shape[1] != self.input_dim:
                raise ValueError(f"Normalization.adapt: data: expected {self.input_dim} "
                                 f"features; got {x.shape[1]}")
            for view, values in zip(self.state, (mean, variance)):
                be.copy(be.asarray(values, dtype=view.dtype), out=view)
        return self

    def _make_workspace(self, n):
        return self.backend.empty((n, self.input_dim), self.dtype)

    def forward(self, x, training=False, step=0):
        y = self._workspace(x.shape[0])
        return self.backend.standardize(x, self.state[0], self.state[1], y)

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        return self.backend.standardize_backward(dy, self.state[1], dy)

    def describe(self):
        return "Normalization"


LAYER_CLASSES = {cls.__name__: cls for cls in (Dense, Dropout, Activation, BatchNormalization,
                                               LayerNormalization, Normalization)}


def layer_from_config(config):
    config = dict(config)
    cls_name = config.pop("class_name", None)
    cls = LAYER_CLASSES.get(cls_name)
    if cls is None:
        raise ValueError(f"layer config: class_name: expected one of "
                         f"{', '.join(LAYER_CLASSES)}; got {cls_name!r}")
    return cls(**config)
