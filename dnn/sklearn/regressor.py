"""``DNNRegressor``: a scikit-learn regressor over a dnn network."""
from __future__ import annotations

import copy

import numpy
from sklearn.base import RegressorMixin
from sklearn.utils.validation import column_or_1d

from . import inputs
from .base import DNNEstimator
from .network import Output


class DNNRegressor(RegressorMixin, DNNEstimator):
    """A multi-layer perceptron regressor trained by dnn, on NumPy or a GPU (CuPy): one
    linear output per target, y of shape (n,) or (n, targets).

    The parameters are ``DNNClassifier``'s (see there), less ``class_weight``, plus
    ``loss`` "mse": a dnn regression loss ("mse", "mae", "huber", or a
    ``dnn.losses.Loss`` such as ``Huber(delta=...)``). The targets are used as they are,
    as ``MLPRegressor`` uses them: for targets far from unit scale, wrap the estimator
    in ``sklearn.compose.TransformedTargetRegressor(transformer=StandardScaler())``.

    Attributes after a fit: ``n_features_in_``, ``feature_names_in_`` (from a DataFrame
    with string column names), ``n_outputs_``, ``model_``, ``history_``, ``n_iter_`` and
    ``loss_``, as ``DNNClassifier`` has them.
    """

    _y_numeric = True

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", dropout=0.0,
                 batch_norm=False, l2=0.0, optimizer="adam", learning_rate=0.001,
                 epochs=200, batch_size="auto", shuffle=True, early_stopping=False,
                 validation_fraction=0.1, patience=10, tol=1e-4, random_state=None,
                 verbose=0, backend=None, dtype=None, model=None, callbacks=None,
                 warm_start=False, loss="mse"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.l2 = l2
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose
        self.backend = backend
        self.dtype = dtype
        self.model = model
        self.callbacks = callbacks
        self.warm_start = warm_start
        self.loss = loss

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch on (X, y), continuing the fitted network (the first call builds
        it). Returns self."""
        return self._fit(X, y, sample_weight, partial=True)

    def _fit_targets(self, y, sample_weight, classes, fresh):
        owner = type(self).__name__
        y = numpy.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        outputs = 1 if y.ndim == 1 else y.shape[1]
        if fresh:
            self.n_outputs_ = outputs
        elif outputs != self.n_outputs_:
            raise ValueError(f"{owner}: y: expected {self.n_outputs_} target"
                             f"{'s' * (self.n_outputs_ > 1)} per sample (as in the first "
                             f"fit); got {outputs}")
        weights = inputs.sample_weights(owner, sample_weight, y.shape[0])
        return y.astype(numpy.float64, copy=False), weights, None

    def _output(self):
        # A Loss instance is copied, so that the parameter stays the user's object.
        loss = self.loss if isinstance(self.loss, str) else copy.deepcopy(self.loss)
        return Output(self.n_outputs_, "linear", loss)

    def predict(self, X):
        """Predicted targets: (n,) for a single target, (n, targets) for several."""
        outputs = self._forward(X)
        return outputs[:, 0] if self.n_outputs_ == 1 else outputs
