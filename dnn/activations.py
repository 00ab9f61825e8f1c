"""Activations as Keras names them: ``relu``, ``leaky_relu(x, negative_slope=0.2)``,
``sigmoid``, ``tanh``, ``gelu(x, approximate=False)``, ``softmax`` and ``linear``.

Layers take an activation as a name (``Dense(8, "gelu")``), as one of this module's
functions (``Dense(8, dnn.activations.gelu)``), as such a function with its options
bound (``functools.partial(dnn.activations.leaky_relu, negative_slope=0.1)``, which is
how a Keras user passes options to an activation), or as a config dict
(``{"name": "leaky_relu", "negative_slope": 0.1}``, the form a saved model keeps). A
name means Keras's defaults: "leaky_relu" has slope 0.2 and "gelu" is the exact erf
form. ``dnn.layers.LeakyReLU(negative_slope=0.3)`` is Keras's layer.

The functions compute on host arrays (NumPy), as Keras's compute on tensors; in a
model the layers run the same math through the backend's fused kernels.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy

from .kernels import reference
from .utils.validation import check_bool, check_positive_number

__all__ = ["ActivationFunction", "gelu", "get", "leaky_relu", "linear", "relu", "sigmoid",
           "softmax", "tanh"]


@dataclasses.dataclass(frozen=True)
class ActivationFunction:
    """One activation with its options, as a layer holds it. ``name`` is Keras's;
    ``negative_slope`` is leaky_relu's and ``approximate`` gelu's (None for the others)."""

    name: str
    negative_slope: float | None = None
    approximate: bool | None = None
    # The backend's name of this function (``backends.ACTIVATIONS``), and the negative
    # slope it is given (only leaky_relu reads it): plain attributes, as every layer of
    # a step reads them.
    kernel: str = dataclasses.field(init=False, compare=False, repr=False)
    slope: float = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "kernel", "gelu_tanh" if self.approximate else self.name)
        object.__setattr__(self, "slope", reference.LEAKY_RELU_SLOPE
                           if self.negative_slope is None else self.negative_slope)

    def options(self):
        """``{option: value}`` that differ from Keras's defaults."""
        out = {}
        if self.name == "leaky_relu" and self.slope != reference.LEAKY_RELU_SLOPE:
            out["negative_slope"] = self.slope
        if self.name == "gelu" and self.approximate:
            out["approximate"] = True
        return out

    def get_config(self):
        """The name alone, or ``{"name": ..., option: value}`` when an option differs
        from Keras's default."""
        options = self.options()
        return {"name": self.name, **options} if options else self.name

    def __str__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{self.name}({options})" if options else self.name

    def __call__(self, x):
        """This activation of host data ``x`` (softmax over the last axis)."""
        x = numpy.asarray(x)
        x = x if x.dtype.kind == "f" else x.astype(numpy.float64)
        return reference.activation(self.kernel, x, numpy, self.slope)


def linear(x):
    """``x`` itself."""
    return ActivationFunction("linear")(x)


def relu(x):
    """``max(x, 0)``."""
    return ActivationFunction("relu")(x)


def leaky_relu(x, negative_slope=reference.LEAKY_RELU_SLOPE):
    """``x`` where positive, ``negative_slope * x`` elsewhere (Keras's default 0.2)."""
    return _make("leaky_relu", {"negative_slope": negative_slope})(x)


def sigmoid(x):
    """``1 / (1 + exp(-x))``."""
    return ActivationFunction("sigmoid")(x)


def tanh(x):
    return ActivationFunction("tanh")(x)


def gelu(x, approximate=False):
    """``x (erf(x / sqrt 2) + 1) / 2``; with ``approximate`` the tanh approximation
    ``x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2``."""
    return _make("gelu", {"approximate": approximate})(x)


def softmax(x):
    """``exp(x) / sum(exp(x))`` over the last axis."""
    return ActivationFunction("softmax")(x)


FUNCTIONS = {f.__name__: f for f in (linear, relu, leaky_relu, sigmoid, tanh, gelu, softmax)}
_OPTIONS = {"leaky_relu": ("negative_slope",), "gelu": ("approximate",)}


def _make(name, options, what="activation"):
    """The ActivationFunction ``name`` with ``options``, each checked."""
    allowed = _OPTIONS.get(name, ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{what}: {name!r} takes "
                         f"{' and '.join(allowed) if allowed else 'no options'}; got "
                         f"{', '.join(unknown)}")
    slope = options.get("negative_slope")
    if slope is not None:  # >= 0, as Keras's LeakyReLU asks: the gradient reads the output
        slope = check_positive_number(slope, f"{what}: negative_slope", allow_zero=True)
    approximate = options.get("approximate")
    if approximate is not None:
        approximate = check_bool(approximate, f"{what}: approximate")
    # Keras's defaults are kept as None, so that equal functions compare equal.
    if slope == reference.LEAKY_RELU_SLOPE:
        slope = None
    return ActivationFunction(name, slope, approximate or None)


def get(identifier, what="activation"):
    """The ``ActivationFunction`` of ``identifier``: None (linear), a name, one of this
    module's functions, a ``functools.partial`` of one with keyword options, a config
    dict ``{"name": ..., option: value}``, or an ActivationFunction."""
    if isinstance(identifier, ActivationFunction):
        return identifier
    if identifier is None:
        return ActivationFunction("linear")
    if isinstance(identifier, str):
        return _make(_check_name(identifier, what), {}, what)
    if isinstance(identifier, dict):
        config = dict(identifier)
        return _make(_check_name(config.pop("name", None), what), config, what)
    if isinstance(identifier, functools.partial) and identifier.func in FUNCTIONS.values():
        if identifier.args:
            raise ValueError(f"{what}: expected options by keyword in a partial of "
                             f"dnn.activations.{identifier.func.__name__}; got positional "
                             f"arguments {identifier.args!r}")
        return _make(identifier.func.__name__, dict(identifier.keywords), what)
    if callable(identifier) and identifier in FUNCTIONS.values():
        return _make(identifier.__name__, {}, what)
    raise ValueError(f"{what}: expected one of {', '.join(FUNCTIONS)} (a name, a "
                     f"dnn.activations function, a functools.partial of one, or a config "
                     f"dict), or None; got {identifier!r}")


def _check_name(name, what):
    if name not in FUNCTIONS:
        raise ValueError(f"{what}: expected one of {', '.join(FUNCTIONS)} (or None); got "
                         f"{name!r}")
    return name
