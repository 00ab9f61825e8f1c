"""What both estimators share: fitting (``fit``, ``partial_fit``, ``warm_start``), the
forward pass behind ``predict``, and pickling.

A fit checks the data with scikit-learn's ``validate_data`` (which sets
``n_features_in_`` and, for a DataFrame, ``feature_names_in_``), builds the network on a
fresh fit, and trains it with ``dnn.Sequential.fit``. A pickled estimator carries its
network as dnn's own model file (``model_bytes``), never as pickled dnn objects.
"""
from __future__ import annotations

import numbers

import numpy
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

import dnn

from . import inputs, model_bytes, network, params

# scikit-learn's float dtypes: float32 data stays float32, anything else becomes float64.
FLOATS = (numpy.float64, numpy.float32)
# Rows per forward pass in predict: few Python steps, little memory at MLP widths.
PREDICT_BATCH = 4096
# The batch size "auto" means, as scikit-learn's MLP: min(200, rows).
AUTO_BATCH = 200


class DNNEstimator(BaseEstimator):
    """The base of ``DNNClassifier`` and ``DNNRegressor`` (not an estimator itself).

    Subclasses give ``_fit_targets(y, sample_weight, classes, fresh)`` returning
    ``(targets, weights, stratify)`` and ``_output()`` (a ``network.Output``)."""

    # ----------------------------------------------------------------------- fit
    def fit(self, X, y, sample_weight=None):
        """Train on ``X`` (n, features) and ``y`` for ``epochs`` epochs: a fresh network,
        or with ``warm_start=True`` the fitted one, continued. Returns self."""
        return self._fit(X, y, sample_weight, partial=False)

    def _fit(self, X, y, sample_weight, partial, classes=None):
        owner = type(self).__name__
        settings = params.settings(self)
        fresh = not hasattr(self, "model_") or not (partial or self.warm_start)
        X, y = validate_data(self, X, y, reset=fresh, dtype=FLOATS, multi_output=True,
                             y_numeric=self._y_numeric)
        targets, weights, stratify = self._fit_targets(y, sample_weight, classes, fresh)
        seed = _seed(self.random_state)
        if fresh:
            dtype = self.dtype or ("float32" if X.dtype == numpy.float32 else "float64")
            self.model_ = network.build(self, settings, X.shape[1], self._output(), seed,
                                        dtype)
            self.history_ = {}
            self.n_iter_ = 0
        train, validation = numpy.arange(X.shape[0]), None
        if settings.early_stopping and not partial:
            train, val = inputs.validation_split(owner, X.shape[0],
                                                 settings.validation_fraction, seed, stratify)
            validation = (X[val], targets[val],
                          inputs.mean_one(owner, None if weights is None else weights[val]))
            if validation[2] is None:
                validation = validation[:2]
        weights = inputs.mean_one(owner, None if weights is None else weights[train])
        self._train(settings, X[train], targets[train], weights, validation,
                    1 if partial else settings.epochs)
        return self

    def _train(self, settings, x, y, weights, validation, epochs):
        """``epochs`` more epochs of the network on (x, y), the history kept."""
        callbacks = list(settings.callbacks)
        monitor = "val_loss" if validation is not None else "loss"
        if epochs > 1 and (validation is not None or settings.tol is not None):
            callbacks.append(dnn.callbacks.EarlyStopping(
                monitor=monitor, min_delta=settings.tol or 0.0, patience=settings.patience,
                restore_best_weights=validation is not None))
        batch_size = min(AUTO_BATCH, x.shape[0]) if settings.batch_size == "auto" \
            else settings.batch_size
        history = self.model_.fit(
            x, y, epochs=self.n_iter_ + epochs, initial_epoch=self.n_iter_,
            batch_size=batch_size, shuffle=settings.shuffle, verbose=settings.verbose,
            callbacks=callbacks, sample_weight=weights, validation_data=validation)
        for key, values in history.history.items():
            self.history_.setdefault(key, []).extend(float(v) for v in values)
        self.n_iter_ += len(history.epoch)
        self.loss_ = self.history_["loss"][-1]

    # ------------------------------------------------------------------- predict
    def _forward(self, X):
        """The network's outputs (n, outputs) for ``X``, after the output activation."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=FLOATS)
        return self.model_.predict(X, batch_size=PREDICT_BATCH)

    # ------------------------------------------------------------------- pickling
    def __getstate__(self):
        state = dict(super().__getstate__())
        if "model_" in state:
            state["model_"] = model_bytes.model_to_bytes(state["model_"])
        return state

    def __setstate__(self, state):
        state = dict(state)
        if isinstance(state.get("model_"), bytes):
            state["model_"] = model_bytes.model_from_bytes(state["model_"],
                                                           state.get("backend"))
        super().__setstate__(state)


def _seed(random_state):
    """The dnn seed of ``random_state``: an int as it is, else a draw from it (None: from
    NumPy's global generator, as scikit-learn estimators draw)."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool) \
            and random_state >= 0:
        return int(random_state)
    return int(check_random_state(random_state).randint(numpy.iinfo(numpy.int32).max))
