"""The estimators' constructor parameters, checked when a fit starts.

scikit-learn stores parameters unchanged at construction and in ``set_params`` (``clone``
and grid searches rely on it), so nothing is checked there: ``settings`` checks them all
at the start of ``fit`` and ``partial_fit``, and raises a ValueError naming the
estimator, the parameter, what it expects and what it got. What dnn itself checks
(activation names, optimizer and loss names, dtypes, backend names) is left to dnn,
whose errors name the argument the same way.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import numbers

import dnn

# scikit-learn's MLP names for two of dnn's activations.
ACTIVATION_ALIASES = {"identity": "linear", "logistic": "sigmoid"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The checked parameters of one fit."""
    hidden_layer_sizes: tuple
    activation: str
    dropout: float
    batch_norm: bool
    l2: float
    epochs: int
    batch_size: object  # "auto" or an int
    shuffle: bool
    early_stopping: bool
    validation_fraction: float
    patience: int
    tol: object  # None or a float
    verbose: int
    callbacks: tuple


def _fail(owner, name, expected, value):
    raise ValueError(f"{owner}: {name}: expected {expected}; got {value!r}")


def _flag(owner, name, value):
    if not isinstance(value, (bool, numbers.Integral)) or value not in (0, 1):
        _fail(owner, name, "True or False", value)
    return bool(value)


def _positive_int(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        _fail(owner, name, "a positive integer", value)
    return int(value)


def _number(owner, name, value, low, high, expected, open_low=False):
    """``value`` as a float if it is a real number with ``low <= value < high`` (``low <
    value`` with ``open_low``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(value) and (low < value if open_low else low <= value) and value < high
    if not ok:
        _fail(owner, name, expected, value)
    return float(value)


def _hidden_layer_sizes(owner, value):
    sizes = (value,) if isinstance(value, numbers.Integral) and not isinstance(value, bool) \
        else value
    try:
        sizes = tuple(sizes)
    except TypeError:
        sizes = None
    if sizes is None or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                                and s > 0 for s in sizes):
        _fail(owner, "hidden_layer_sizes", "a positive integer or a sequence of them (the "
              "width of each hidden layer)", value)
    return tuple(int(s) for s in sizes)


def _callbacks(owner, value):
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or \
            not all(isinstance(c, dnn.callbacks.Callback) for c in value):
        _fail(owner, "callbacks", "None or a list of dnn.callbacks.Callback instances", value)
    # Copies: fit binds each callback to the model, and the parameter stays unchanged.
    return tuple(copy.deepcopy(c) for c in value)


def settings(estimator):
    """The ``Settings`` of ``estimator``'s parameters, checked."""
    owner = type(estimator).__name__
    p = estimator.get_params(deep=False)
    if not isinstance(p["activation"], str):
        _fail(owner, "activation", "an activation name such as 'relu'", p["activation"])
    if p["batch_size"] != "auto":
        _positive_int(owner, "batch_size (or 'auto')", p["batch_size"])
    if p["tol"] is not None:
        _number(owner, "tol", p["tol"], 0, math.inf, "None or a finite number >= 0")
    if p["verbose"] not in (0, 1, 2) or isinstance(p["verbose"], float):
        _fail(owner, "verbose", "0, 1 or 2", p["verbose"])
    check_building(estimator)
    return Settings(
        hidden_layer_sizes=_hidden_layer_sizes(owner, p["hidden_layer_sizes"]),
        activation=ACTIVATION_ALIASES.get(p["activation"], p["activation"]),
        dropout=_number(owner, "dropout", p["dropout"], 0, 1, "a number in [0, 1)"),
        batch_norm=_flag(owner, "batch_norm", p["batch_norm"]),
        l2=_number(owner, "l2", p["l2"], 0, math.inf, "a finite number >= 0"),
        epochs=_positive_int(owner, "epochs", p["epochs"]),
        batch_size=p["batch_size"] if p["batch_size"] == "auto" else int(p["batch_size"]),
        shuffle=_flag(owner, "shuffle", p["shuffle"]),
        early_stopping=_flag(owner, "early_stopping", p["early_stopping"]),
        validation_fraction=_number(owner, "validation_fraction", p["validation_fraction"],
                                    0, 1, "a number in (0, 1)", open_low=True),
        patience=_positive_int(owner, "patience", p["patience"]),
        tol=None if p["tol"] is None else float(p["tol"]),
        verbose=int(p["verbose"]),
        callbacks=_callbacks(owner, p["callbacks"]),
    )


def check_building(estimator):
    """The parameters that choose where and how the network is built: ``warm_start``,
    ``backend`` (None or a name for ``dnn.use_backend``), ``dtype`` and ``model``."""
    owner = type(estimator).__name__
    _flag(owner, "warm_start", estimator.warm_start)
    if estimator.backend is not None and not isinstance(estimator.backend, str):
        _fail(owner, "backend", "None or a backend name such as 'numpy', 'cupy' or 'cupy:1'",
              estimator.backend)
    if estimator.dtype not in (None, "float32", "float64", "mixed_bfloat16"):
        _fail(owner, "dtype", "None (the dtype of X: float32 stays float32, anything else "
              "trains in float64), 'float32', 'float64' or 'mixed_bfloat16'", estimator.dtype)
    if estimator.model is not None and not callable(estimator.model):
        _fail(owner, "model", "None or a callable that returns a dnn.Sequential",
              estimator.model)


def optimizer(estimator):
    """A fresh optimizer: ``optimizer`` by name with ``learning_rate`` (a number or a
    schedule), or a copy of the dnn Optimizer given (with its own rate)."""
    chosen = estimator.optimizer
    if isinstance(chosen, str):
        rate = estimator.learning_rate
        if isinstance(rate, dnn.optimizers.schedules.LearningRateSchedule):
            rate = copy.deepcopy(rate)
        return dnn.optimizers.get(chosen, learning_rate=rate)
    if not isinstance(chosen, dnn.optimizers.Optimizer):
        _fail(type(estimator).__name__, "optimizer", "an optimizer name such as 'adam' or a "
              "dnn.optimizers.Optimizer", chosen)
    return copy.deepcopy(chosen)
