"""The dnn model an estimator trains: a stack of Dense layers from its parameters, or the
``Sequential`` its ``model=`` callable builds, compiled with the task's loss.

The output layer follows the task: one sigmoid unit for two classes, a softmax unit per
class for more, a sigmoid unit per label for multi-label targets, and a linear unit per
target for regression.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import dnn
from dnn import regularizers
from dnn.layers import BatchNormalization, Dense, Dropout

from . import params


@dataclass(frozen=True)
class Output:
    """What the network ends in and is trained with."""
    units: int
    activation: str  # "sigmoid", "softmax" or "linear"
    loss: object  # a dnn loss name or Loss


def backend_scope(name):
    """``dnn.use_backend(name)``, or no change for None (the current backend)."""
    return contextlib.nullcontext() if name is None else dnn.use_backend(name)


def build(estimator, settings, n_features, output, seed, dtype):
    """A compiled, built ``dnn.Sequential`` for ``n_features`` inputs and ``output``,
    on the estimator's backend."""
    with backend_scope(estimator.backend):
        if estimator.model is None:
            model = _stack(settings, n_features, output, seed, dtype)
        else:
            model = _from_builder(estimator, n_features, output, seed, dtype)
        if model.loss is None:  # a builder may compile its model itself
            model.compile(loss=output.loss, optimizer=params.optimizer(estimator))
    return model


def _stack(settings, n_features, output, seed, dtype):
    """Dense layers of ``hidden_layer_sizes`` (each followed by BatchNormalization and
    Dropout when asked), then the output layer."""
    def kernel_penalty():
        return regularizers.L2(settings.l2) if settings.l2 else None

    layers = []
    for width in settings.hidden_layer_sizes:
        layers.append(Dense(width, settings.activation, kernel_regularizer=kernel_penalty()))
        if settings.batch_norm:
            layers.append(BatchNormalization())
        if settings.dropout:
            layers.append(Dropout(settings.dropout))
    layers.append(Dense(output.units, output.activation, kernel_regularizer=kernel_penalty()))
    return dnn.Sequential(layers, input_dim=n_features, seed=seed, dtype=dtype)


def _from_builder(estimator, n_features, output, seed, dtype):
    """``estimator.model(n_features=, n_outputs=, output_activation=, seed=, dtype=)``,
    checked: a Sequential whose output has ``output.units`` units."""
    owner = type(estimator).__name__
    model = estimator.model(n_features=n_features, n_outputs=output.units,
                            output_activation=output.activation, seed=seed, dtype=dtype)
    if not isinstance(model, dnn.Sequential):
        raise TypeError(f"{owner}: model: expected a callable that returns a "
                        f"dnn.Sequential; it returned {type(model).__name__}")
    if not model.built:
        model.build(n_features)
    if model.input_dim != n_features or model.output_dim != output.units:
        raise ValueError(f"{owner}: model: expected a Sequential from {n_features} inputs to "
                         f"{output.units} outputs (the data's); the callable built one from "
                         f"{model.input_dim} to {model.output_dim}")
    return model
