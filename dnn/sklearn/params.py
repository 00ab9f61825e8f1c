"""The estimators' constructor parameters, checked when a fit starts.

scikit-learn stores parameters unchanged at construction and in ``set_params`` (``clone``
and grid searches rely on it), so nothing is checked there: ``settings`` checks them all
at the start of ``fit`` and ``partial_fit``, and raises a ValueError naming the
estimator, the parameter, what it expects and what it got, with dnn's own checks
(``dnn.utils.validation``) and lists (its optimizers and dtypes). What only dnn can
tell (activation and loss names, backend names) is left to dnn, whose errors name the
argument the same way.
"""
from __future__ import annotations

import copy
import dataclasses
import numbers

import dnn
from dnn.optimizers import OPTIMIZERS
from dnn.utils.validation import (MIXED_POLICIES, WEIGHT_DTYPES, check_bool, check_number_in,
                                  check_positive_int, check_positive_number)

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
        check_positive_int(p["batch_size"], f"{owner}: batch_size (or 'auto')")
    if p["tol"] is not None:
        check_positive_number(p["tol"], f"{owner}: tol (or None)", allow_zero=True)
    if p["verbose"] not in (0, 1, 2) or isinstance(p["verbose"], float):
        _fail(owner, "verbose", "0, 1 or 2", p["verbose"])
    check_building(estimator)
    return Settings(
        hidden_layer_sizes=_hidden_layer_sizes(owner, p["hidden_layer_sizes"]),
        activation=ACTIVATION_ALIASES.get(p["activation"], p["activation"]),
        dropout=check_number_in(p["dropout"], f"{owner}: dropout", 0, 1, "[)"),
        batch_norm=check_bool(p["batch_norm"], f"{owner}: batch_norm"),
        l2=check_positive_number(p["l2"], f"{owner}: l2", allow_zero=True),
        epochs=check_positive_int(p["epochs"], f"{owner}: epochs"),
        batch_size=p["batch_size"] if p["batch_size"] == "auto" else int(p["batch_size"]),
        shuffle=check_bool(p["shuffle"], f"{owner}: shuffle"),
        early_stopping=check_bool(p["early_stopping"], f"{owner}: early_stopping"),
        validation_fraction=check_number_in(p["validation_fraction"],
                                            f"{owner}: validation_fraction", 0, 1, "()"),
        patience=check_positive_int(p["patience"], f"{owner}: patience"),
        tol=None if p["tol"] is None else float(p["tol"]),
        verbose=int(p["verbose"]),
        callbacks=_callbacks(owner, p["callbacks"]),
    )


def check_building(estimator):
    """The parameters that choose where and how the network is built: ``warm_start``,
    ``backend`` (None or a name for ``dnn.use_backend``), ``dtype`` and ``model``."""
    owner = type(estimator).__name__
    check_bool(estimator.warm_start, f"{owner}: warm_start")
    if estimator.backend is not None and not isinstance(estimator.backend, str):
        _fail(owner, "backend", "None or a backend name such as 'numpy', 'cupy' or 'cupy:1'",
              estimator.backend)
    if estimator.dtype is not None and estimator.dtype not in WEIGHT_DTYPES + MIXED_POLICIES:
        _fail(owner, "dtype", "None (the dtype of X: float32 stays float32, anything else "
              f"trains in float64) or one of {', '.join(WEIGHT_DTYPES + MIXED_POLICIES)}",
              estimator.dtype)
    if estimator.model is not None and not callable(estimator.model):
        _fail(owner, "model", "None or a callable that returns a dnn.Sequential",
              estimator.model)


def optimizer(estimator):
    """A fresh optimizer: ``optimizer`` by name with ``learning_rate`` (a number or a
    schedule), or a copy of the dnn Optimizer given (with its own rate)."""
    chosen = estimator.optimizer
    if isinstance(chosen, str):
        if chosen not in OPTIMIZERS:
            _fail(type(estimator).__name__, "optimizer", f"one of {', '.join(OPTIMIZERS)} "
                  f"or a dnn.optimizers.Optimizer", chosen)
        rate = estimator.learning_rate
        if isinstance(rate, dnn.optimizers.schedules.LearningRateSchedule):
            rate = copy.deepcopy(rate)
        return dnn.optimizers.get(chosen, learning_rate=rate)
    if not isinstance(chosen, dnn.optimizers.Optimizer):
        _fail(type(estimator).__name__, "optimizer", "an optimizer name such as 'adam' or a "
              "dnn.optimizers.Optimizer", chosen)
    return copy.deepcopy(chosen)
