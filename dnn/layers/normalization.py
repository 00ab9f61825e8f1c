"""The normalization layers: BatchNormalization, LayerNormalization and Normalization
(feature standardization inside the model)."""
from __future__ import annotations

import collections

import numpy

from ..utils.validation import check_bool, check_number_in, check_positive_number
from .base import INFERENCE, Layer
from .registry import register


def _affine_shapes(features, center, scale):
    """gamma (with ``scale``) then beta (with ``center``), as Keras orders them."""
    return [(n, features) for n, wanted in (("gamma", scale), ("beta", center)) if wanted]


def _affine_views(layer, views):
    """``(gamma or None, beta or None)`` from views laid out as ``_affine_shapes``."""
    names = [name for name, _ in layer.param_shapes]
    return tuple(views[names.index(n)] if n in names else None for n in ("gamma", "beta"))


def _affine_values(layer):
    ones, zeros = numpy.ones(layer.input_dim), numpy.zeros(layer.input_dim)
    return [ones if name == "gamma" else zeros for name, _ in layer.param_shapes]


@register
class BatchNormalization(Layer):
    """``BatchNormalization(momentum=0.99, epsilon=1e-3, center=True, scale=True)``, as
    Keras: in training, each feature is normalized with the batch's mean and (biased)
    variance, then scaled by ``gamma`` (with ``scale``) and shifted by ``beta`` (with
    ``center``), and the moving statistics move towards the batch's (``moving = moving
    * momentum + batch * (1 - momentum)``); at inference (predict, evaluate, validation)
    the moving statistics are used. The moving statistics are non-trainable weights:
    saved with the model, restored on load."""

    averaged_state = ("moving_mean", "moving_variance")
    # The normalized input, the variance it was normalized with (the batch's in
    # training, the moving one at inference), and whether that was the batch's.
    Retained = collections.namedtuple("BatchNormalizationRetained", "xhat var batch")

    def __init__(self, momentum=0.99, epsilon=1e-3, center=True, scale=True, name=None,
                 input_dim=None, input_shape=None):
        super().__init__(name, input_dim, input_shape)
        self.momentum = check_number_in(momentum, "BatchNormalization: momentum", 0, 1)
        self.epsilon = check_positive_number(epsilon, "BatchNormalization: epsilon")
        self.center = check_bool(center, "BatchNormalization: center")
        self.scale = check_bool(scale, "BatchNormalization: scale")

    def build(self, input_dim):
        super().build(input_dim)
        features = (self.input_dim,)
        self.param_shapes = _affine_shapes(features, self.center, self.scale)
        self.state_shapes = [("moving_mean", features), ("moving_variance", features)]
        return self.output_dim

    def initial_values(self, rng, dtype):
        ones, zeros = numpy.ones(self.input_dim, dtype), numpy.zeros(self.input_dim, dtype)
        return [v.astype(dtype) for v in _affine_values(self)] + [zeros, ones]

    def _make_workspace(self, n):
        be = self.backend
        shape = (n, self.input_dim)
        return (be.empty(shape, self.compute_dtype), be.empty(shape, self.compute_dtype),
                be.empty(shape, self.dtype), be.empty((self.input_dim,), self.dtype))

    def forward(self, x, context=INFERENCE):
        be = self.backend
        y, xhat, scratch, var = self._workspace(x.shape[0])
        gamma, beta = _affine_views(self, self.params)
        moving_mean, moving_var = self.state
        if not context.training:
            be.batch_norm_inference(x, gamma, beta, moving_mean, moving_var, self.epsilon, y,
                                    xhat)
            return y, self.Retained(xhat, moving_var, False)
        be.batch_norm_forward(x, gamma, beta, self.epsilon, y, xhat, var, moving_mean,
                              moving_var, self.momentum, scratch)
        return y, self.Retained(xhat, var, True)

    def backward(self, dy, retained, need_dx=True):
        _, _, scratch, _ = self._workspace(dy.shape[0])
        gamma, _ = _affine_views(self, self.params)
        dgamma, dbeta = _affine_views(self, self.grads)
        dx = self.backend.batch_norm_backward(dy, retained.xhat, gamma, retained.var,
                                              self.epsilon, dgamma, dbeta, dy, scratch,
                                              retained.batch)
        return dx if need_dx else None

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale}

    def describe(self):
        return "BatchNormalization"


@register
class LayerNormalization(Layer):
    """``LayerNormalization(epsilon=1e-3, center=True, scale=True, rms_scaling=False)``,
    as Keras: each sample is normalized over its features, then scaled by ``gamma``
    (with ``scale``) and shifted by ``beta`` (with ``center``), per feature; the same in
    training and at inference. With ``rms_scaling`` each sample is instead scaled by
    ``1 / sqrt(var + epsilon)`` without being centred, then by ``gamma``: Keras 3's
    formula, variance and all (Keras 3.15 deprecates the option for that reason, for its
    RMSNormalization layer); center and scale are then ignored."""

    # The normalized input, each row's 1 / sqrt(var + epsilon), and (rms_scaling) each
    # row's mean times that.
    Retained = collections.namedtuple("LayerNormalizationRetained", "xhat rstd shift")

    def __init__(self, epsilon=1e-3, center=True, scale=True, rms_scaling=False, name=None,
                 input_dim=None, input_shape=None):
        super().__init__(name, input_dim, input_shape)
        self.epsilon = check_positive_number(epsilon, "LayerNormalization: epsilon")
        self.center = check_bool(center, "LayerNormalization: center")
        self.scale = check_bool(scale, "LayerNormalization: scale")
        self.rms_scaling = check_bool(rms_scaling, "LayerNormalization: rms_scaling")

    def build(self, input_dim):
        super().build(input_dim)
        rms = self.rms_scaling  # Keras: gamma always, beta never
        self.param_shapes = _affine_shapes((self.input_dim,), self.center and not rms,
                                           self.scale or rms)
        return self.output_dim

    def initial_values(self, rng, dtype):
        return [v.astype(dtype) for v in _affine_values(self)]

    def _make_workspace(self, n):
        be = self.backend
        shape = (n, self.input_dim)
        return (be.empty(shape, self.compute_dtype), be.empty(shape, self.compute_dtype),
                be.empty(shape, self.dtype), be.empty((n,), self.dtype),
                be.empty((n,), self.dtype) if self.rms_scaling else None)

    def forward(self, x, context=INFERENCE):
        y, xhat, _, rstd, shift = self._workspace(x.shape[0])
        gamma, beta = _affine_views(self, self.params)
        self.backend.layer_norm_forward(x, gamma, beta, self.epsilon, y, xhat, rstd, shift)
        return y, self.Retained(xhat, rstd, shift)

    def backward(self, dy, retained, need_dx=True):
        _, _, scratch, _, _ = self._workspace(dy.shape[0])
        gamma, _ = _affine_views(self, self.params)
        dgamma, dbeta = _affine_views(self, self.grads)
        dx = self.backend.layer_norm_backward(dy, retained.xhat, gamma, retained.rstd, dgamma,
                                              dbeta, dy, scratch, retained.shift)
        return dx if need_dx else None

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale, "rms_scaling": self.rms_scaling}

    def describe(self):
        return "LayerNormalization" + ("(rms_scaling)" if self.rms_scaling else "")


@register
class Normalization(Layer):
    """Feature standardization inside the model, as Keras' ``Normalization``:
    ``(x - mean) / max(sqrt(variance), 1e-7)`` per feature, with the mean and variance
    set by ``adapt(x)`` (or given). They are non-trainable weights, saved with the
    model, so a model trained on raw features predicts on raw features.

    ``Normalization(mean=None, variance=None, invert=False, input_dim=None)``; with
    ``invert`` the layer undoes the standardization instead: ``mean + x *
    max(sqrt(variance), 1e-7)`` (Keras' ``invert=True``, for example to turn a model's
    standardized outputs back into the targets' units).
    """

    Retained = collections.namedtuple("NormalizationRetained", "")
    _NOTHING = Retained()

    def __init__(self, mean=None, variance=None, invert=False, name=None, input_dim=None,
                 input_shape=None):
        super().__init__(name, input_dim, input_shape)
        self.invert = check_bool(invert, "Normalization: invert")
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
        return self.backend.empty((n, self.input_dim), self.compute_dtype)

    def forward(self, x, context=INFERENCE):
        y = self.backend.standardize(x, self.state[0], self.state[1], self._workspace(x.shape[0]),
                                     self.invert)
        return y, self._NOTHING

    def backward(self, dy, retained, need_dx=True):
        if not need_dx:
            return None
        return self.backend.standardize_backward(dy, self.state[1], dy, self.invert)

    def get_config(self):
        config = super().get_config()
        return {**config, "invert": True} if self.invert else config

    def describe(self):
        return "Normalization(invert)" if self.invert else "Normalization"
