"""``DNNClassifier``: a scikit-learn classifier over a dnn network."""
from __future__ import annotations

import numpy
from sklearn.base import ClassifierMixin
from sklearn.utils.class_weight import compute_sample_weight

from . import inputs, targets
from .base import DNNEstimator


class DNNClassifier(ClassifierMixin, DNNEstimator):
    """A multi-layer perceptron classifier trained by dnn, on NumPy or a GPU (CuPy).

    Two classes train one sigmoid unit, more classes a softmax; an (n, k) 0/1 target
    (multi-label, as ``MultiLabelBinarizer`` gives) trains k sigmoid units. Labels may be
    numbers or strings.

    Parameters (stored as given; checked when ``fit`` starts):

    - ``hidden_layer_sizes`` (100,): the width of each hidden Dense layer, as
      scikit-learn's ``MLPClassifier`` has it.
    - ``activation`` "relu": the hidden layers' activation, any of dnn's ("relu",
      "leaky_relu", "tanh", "sigmoid", "gelu", "linear"; "logistic" and "identity" too).
    - ``dropout`` 0.0: the Dropout rate after each hidden layer (none at 0).
    - ``batch_norm`` False: a BatchNormalization after each hidden layer.
    - ``l2`` 0.0: an L2 penalty ``l2 * sum(W ** 2)`` on every Dense kernel
      (``dnn.regularizers.L2``).
    - ``optimizer`` "adam": a dnn optimizer name (a key of ``dnn.optimizers.OPTIMIZERS``:
      "adam", "sgd", "rmsprop"...) used with ``learning_rate`` (0.001, or a
      ``dnn.optimizers.schedules`` schedule), or a ``dnn.optimizers.Optimizer`` instance
      (copied at each fit, with its own rate).
    - ``epochs`` 200: the most epochs a fit trains (``partial_fit``: one).
    - ``batch_size`` "auto": min(200, samples), as ``MLPClassifier``; or an integer.
    - ``shuffle`` True: reshuffle the rows every epoch.
    - ``early_stopping`` False: hold out ``validation_fraction`` (0.1) of the rows,
      stratified, and stop when the validation loss has not improved by ``tol`` for
      ``patience`` epochs (counted as ``dnn.callbacks.EarlyStopping`` counts), going
      back to the best epoch's weights. Without it, the training loss is watched the
      same way (``tol`` None: train all ``epochs``), as ``MLPClassifier`` does with its
      ``tol`` and ``n_iter_no_change``.
    - ``patience`` 10, ``tol`` 1e-4: see ``early_stopping``.
    - ``random_state`` None: an int makes the fit reproducible (weights, shuffles,
      dropout masks and the validation split).
    - ``verbose`` 0: dnn's progress output (1: a bar, 2: a line per epoch).
    - ``backend`` None: the dnn backend to build on ("numpy", "cupy", "cupy:1", "auto");
      None: the current one (``dnn.use_backend``, ``DNN_BACKEND``).
    - ``dtype`` None: follow X as scikit-learn does (float32 X trains in float32, any
      other in float64); or "float32", "float64", "mixed_bfloat16" (on a GPU, "float32"
      is the fast choice).
    - ``model`` None: a callable for networks beyond a Dense stack, called as
      ``model(n_features=, n_outputs=, output_activation=, seed=, dtype=)`` and returning
      a ``dnn.Sequential`` from n_features inputs to n_outputs units with that output
      activation (pass ``seed`` and ``dtype`` on to it to follow ``random_state`` and
      ``dtype``). Uncompiled, it is compiled with the task's loss and ``optimizer``.
      The Dense-stack parameters above then do not apply.
    - ``callbacks`` None: a list of ``dnn.callbacks.Callback`` (copied at each fit).
    - ``warm_start`` False: True makes ``fit`` continue the fitted network.

    ``sample_weight`` (and ``class_weight``) weight each row's loss, scaled to a mean of
    1: a full-batch fit with integer weights equals a fit on the rows repeated, as
    scikit-learn asks. Minibatches and BatchNormalization's batch statistics (which
    count every row of a batch) make that approximate.
    - ``class_weight`` None: a dict {label: weight} or "balanced", multiplied into
      ``sample_weight``.

    Attributes after a fit: ``classes_``, ``n_features_in_``, ``feature_names_in_`` (from
    a DataFrame with string column names), ``n_outputs_``, ``model_`` (the trained
    ``dnn.Sequential``), ``history_`` (per-epoch lists: "loss", and "val_loss" with
    early stopping, over all fits of a warm start), ``n_iter_`` (epochs trained) and
    ``loss_`` (the last epoch's training loss).
    """

    _y_numeric = False

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", dropout=0.0,
                 batch_norm=False, l2=0.0, optimizer="adam", learning_rate=0.001,
                 epochs=200, batch_size="auto", shuffle=True, early_stopping=False,
                 validation_fraction=0.1, patience=10, tol=1e-4, random_state=None,
                 verbose=0, backend=None, dtype=None, model=None, callbacks=None,
                 warm_start=False, class_weight=None):
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
        self.class_weight = class_weight

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch on (X, y), continuing the fitted network (the first call builds it,
        and needs ``classes``, every label there will be, unless y is multi-label).
        Returns self."""
        if not hasattr(self, "model_") and classes is None and \
                targets.kind_of(type(self).__name__, targets.check(y)) != \
                "multilabel-indicator":
            raise ValueError(f"{type(self).__name__}: partial_fit: classes: expected every "
                             f"class label (e.g. numpy.unique(y_all)) on the first call; "
                             f"got None")
        return self._fit(X, y, sample_weight, partial=True, classes=classes)

    def _fit_targets(self, y, sample_weight, classes, fresh):
        owner = type(self).__name__
        y = targets.check(y)
        if fresh:
            self._encoding = targets.ClassEncoding.from_targets(owner, y, classes)
            self.classes_ = self._encoding.classes
            self.n_outputs_ = self._encoding.output.units
        elif classes is not None and not numpy.array_equal(numpy.unique(classes),
                                                           self.classes_):
            raise ValueError(f"{owner}: partial_fit: classes: expected {self.classes_.tolist()} "
                             f"(as in the first call) or None; got {list(classes)}")
        encoded = self._encoding.encode(owner, y)
        weights = inputs.sample_weights(owner, sample_weight, y.shape[0])
        if self.class_weight is not None:
            by_class = compute_sample_weight(self.class_weight, y)
            weights = by_class if weights is None else weights * by_class
        single = self._encoding.kind != "multilabel-indicator"
        if fresh and classes is None and single and weights is not None:
            weighted = numpy.unique(encoded[weights > 0])
            if weighted.size < 2:
                raise ValueError(f"{owner}: sample_weight: expected non-zero weights on at "
                                 f"least 2 classes; only class "
                                 f"{self.classes_[int(weighted[0])]!r} has any")
        return encoded, weights, encoded if single else None

    def _output(self):
        return self._encoding.output

    def predict_proba(self, X):
        """Class probabilities: (n, classes) in the order of ``classes_``; for multi-label
        targets (n, labels), each label's own probability."""
        outputs = self._forward(X)  # first: it raises NotFittedError before a fit
        return self._encoding.probabilities(outputs)

    def predict(self, X):
        """The most probable class of each row (multi-label: the (n, labels) indicator,
        1 where a label's probability is above 0.5)."""
        outputs = self._forward(X)
        return self._encoding.labels(outputs)
