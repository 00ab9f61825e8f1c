"""Metrics, as Keras names them, accumulated on the device over an epoch and read back
once (with the loss, in one transfer).

A metric owns ``slots`` running totals in device memory (counts or sums); ``update`` adds
a batch to them with no host synchronisation, so it runs inside a captured step, and
``result`` turns the host totals into the epoch's value.

As in Keras 3, ``compile(metrics=)`` are computed unweighted and
``compile(weighted_metrics=)`` weight each sample by its ``sample_weight`` (and
``class_weight``): a weighted mean divides by the sum of the weights, and a weighted
count adds each sample's weight.
"""
from __future__ import annotations

import math

import numpy

from .kernels import reference
from .utils.validation import (check_choice, check_int_at_least, check_nonnegative_int,
                               check_number_in, check_positive_int)
from .losses import BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy


class Metric:
    """``name``: the key of its value in the logs and history (each class has a default,
    as Keras's)."""

    name = "metric"
    # Which way is better, as Keras 3's ``_direction``: "up" (accuracies, AUC, precision,
    # recall) or "down" (errors); None where a metric does not say. Callbacks watching
    # the metric with mode="auto" follow it.
    direction = None
    # Whether the metric weights each sample (a weighted_metrics entry); set by compile.
    weighted = False
    # The model's BufferCache, for workspaces shaped by the batch size; set by compile.
    buffers = None

    def __init__(self, name=None):
        if name is not None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"{type(self).__name__}: name: expected a non-empty "
                                 f"string; got {name!r}")
            self.name = name
        self.loss = self.output_activation = self.logits = None

    @property
    def slots(self):
        return 1

    def bind(self, loss, output_activation, logits, output_dim):
        """Called at compile: the loss, the output activation, whether the model's
        training output holds logits, and the number of outputs."""
        self.loss, self.output_activation, self.logits = loss, output_activation, logits

    def update(self, backend, output, target, total, weights=None):
        """Add this batch to ``total`` (this metric's ``slots``, on the device); each row
        weighted by ``weights`` (rows,) when given."""
        raise NotImplementedError

    def result(self, totals, n, output_dim):
        """The value over ``n`` samples from the host totals."""
        return totals[0] / n

    def options(self):
        """The constructor's arguments other than ``name``, as saved."""
        return {}

    def get_config(self):
        return {"class_name": type(self).__name__, "name": self.name, **self.options()}

    def _requires(self, kinds, what):
        if not isinstance(self.loss, kinds):
            raise ValueError(f"metrics: {self.name!r} expects {what}; got loss "
                             f"{self.loss.name!r}")

    def _probability_threshold(self, threshold):
        """A threshold on probabilities, moved to the logit scale when the output holds
        logits (the sigmoid is monotonic)."""
        if not self.logits:
            return threshold
        if threshold <= 0 or threshold >= 1:
            return -math.inf if threshold <= 0 else math.inf
        return math.log(threshold / (1 - threshold))


class _MeanMetric(Metric):
    """A mean over samples, of a per-sample value that ``_add`` sums on the device
    (``per_row`` values a row): weighted, it divides by the sum of the weights, which a
    second slot keeps."""

    per_row_outputs = False  # whether each row holds output_dim values (elementwise)

    @property
    def slots(self):
        return 2 if self.weighted else 1

    def bind(self, loss, output_activation, logits, output_dim):
        super().bind(loss, output_activation, logits, output_dim)
        if self.weighted:
            self.__dict__.pop("update", None)
        else:  # one call a step fewer: a tiny model's step feels each
            self.update = self._add

    def update(self, backend, output, target, total, weights=None):
        self._add(backend, output, target, total[0:1], weights)
        backend.add_row_weights(weights, output.shape[0], total[1:2])

    def _add(self, backend, output, target, total, weights):
        raise NotImplementedError

    def result(self, totals, n, output_dim):
        per_row = output_dim if self.per_row_outputs else 1
        denominator = (totals[1] if self.weighted else n) * per_row
        return totals[0] / denominator if denominator else 0.0


class Accuracy(_MeanMetric):
    """"accuracy" (or "acc", or "Accuracy", as Keras takes them): binary accuracy for
    binary_crossentropy, argmax accuracy for the categorical losses (as Keras picks)."""
    name = "accuracy"
    direction = "up"

    def bind(self, loss, output_activation, logits, output_dim):
        super().bind(loss, output_activation, logits, output_dim)
        self._requires((CategoricalCrossentropy, BinaryCrossentropy),
                       "a classification loss (binary_crossentropy, categorical_crossentropy "
                       "or sparse_categorical_crossentropy)")
        self.kind = "argmax" if isinstance(loss, CategoricalCrossentropy) else "threshold"
        self.per_row_outputs = self.kind == "threshold"
        self.threshold = self._probability_threshold(0.5)

    def _add(self, backend, output, target, total, weights):
        if self.kind == "argmax":
            return backend.add_argmax_matches(output, target, total, weights)
        return backend.add_threshold_matches(output, target, self.threshold, total, weights)


class BinaryAccuracy(_MeanMetric):
    """``BinaryAccuracy(threshold=0.5)``: elements where the prediction > threshold
    agrees with the target > 0.5."""
    name = "binary_accuracy"
    direction = "up"
    per_row_outputs = True

    def __init__(self, threshold=0.5, name=None):
        super().__init__(name)
        self.threshold = float(threshold)
        self._cut = self.threshold

    def bind(self, loss, output_activation, logits, output_dim):
        super().bind(loss, output_activation, logits, output_dim)
        self._requires(BinaryCrossentropy, "loss 'binary_crossentropy'")
        self._cut = self._probability_threshold(self.threshold)

    def _add(self, backend, output, target, total, weights):
        return backend.add_threshold_matches(output, target, self._cut, total, weights)

    def options(self):
        return {"threshold": self.threshold}


class CategoricalAccuracy(_MeanMetric):
    """Rows whose highest score is the class of the target row (one-hot targets)."""
    name = "categorical_accuracy"
    direction = "up"
    _loss_kind, _needs = (CategoricalCrossentropy, "one-hot targets (categorical_crossentropy)")

    def bind(self, loss, output_activation, logits, output_dim):
        super().bind(loss, output_activation, logits, output_dim)
        self._requires(self._loss_kind, self._needs)
        if self._loss_kind is not SparseCategoricalCrossentropy and \
                isinstance(loss, SparseCategoricalCrossentropy):
            raise ValueError(f"metrics: {self.name!r} expects one-hot targets; got loss "
                             f"'sparse_categorical_crossentropy' (use the sparse form)")

    def _add(self, backend, output, target, total, weights):
        return backend.add_argmax_matches(output, target, total, weights)


class SparseCategoricalAccuracy(CategoricalAccuracy):
    """Rows whose highest score is the integer label."""
    name = "sparse_categorical_accuracy"
    _loss_kind, _needs = (SparseCategoricalCrossentropy,
                          "integer labels (sparse_categorical_crossentropy)")


class TopKCategoricalAccuracy(CategoricalAccuracy):
    """``TopKCategoricalAccuracy(k=5)``: rows whose target class is among the k highest
    scores (ties at the boundary count as in)."""
    name = "top_k_categorical_accuracy"

    def __init__(self, k=5, name=None):
        super().__init__(name)
        self.k = check_positive_int(k, f"{type(self).__name__}: k")

    def _add(self, backend, output, target, total, weights):
        return backend.add_top_k_matches(output, target, self.k, total, weights)

    def options(self):
        return {"k": self.k}


class SparseTopKCategoricalAccuracy(TopKCategoricalAccuracy):
    name = "sparse_top_k_categorical_accuracy"
    _loss_kind, _needs = (SparseCategoricalCrossentropy,
                          "integer labels (sparse_categorical_crossentropy)")


class _ConfusionCounts(Metric):
    """Counts, at each of ``thresholds``, of ``prediction > threshold`` against targets
    that are not 0 (as Keras counts them): true positives and predicted positives per
    threshold, then the actual positives. With ``top_k`` only each row's k highest
    scores can be predicted positive, and with ``class_id`` only that column counts
    (one-hot or multi-label targets shaped like the output); both as Keras's."""
    direction = "up"

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None):
        super().__init__(name)
        owner = type(self).__name__
        self.top_k = None if top_k is None else check_positive_int(top_k, f"{owner}: top_k")
        self.class_id = None if class_id is None else check_nonnegative_int(
            class_id, f"{owner}: class_id")
        self.thresholds = list(thresholds) if isinstance(thresholds, (list, tuple)) \
            else thresholds
        if thresholds is None:  # Keras: 0.5, or with top_k every score of the top k
            cuts = [0.5 if top_k is None else reference.TOP_K_FILL]
        else:
            values = self.thresholds if isinstance(self.thresholds, list) else [thresholds]
            if not values:
                raise ValueError(f"{owner}: thresholds: expected a number in [0, 1] or a "
                                 f"non-empty list of them; got []")
            cuts = [check_number_in(t, f"{owner}: thresholds", 0, 1) for t in values]
        self._probabilities = cuts
        self._cuts = cuts

    @property
    def slots(self):
        return 2 * len(self._cuts) + 1

    def bind(self, loss, output_activation, logits, output_dim):
        super().bind(loss, output_activation, logits, output_dim)
        if isinstance(loss, SparseCategoricalCrossentropy) or not isinstance(
                loss, (BinaryCrossentropy, CategoricalCrossentropy)):
            raise ValueError(f"metrics: {self.name!r} expects targets shaped like the "
                             f"output: loss 'binary_crossentropy' or "
                             f"'categorical_crossentropy'; got loss {loss.name!r}")
        if self.class_id is not None and self.class_id >= output_dim:
            raise ValueError(f"metrics: {self.name!r}: class_id: expected an integer in "
                             f"[0, {output_dim}) (the output's units); got {self.class_id}")
        # Softmax needs each row's scores, and top_k and class_id change what is counted:
        # those go through select_scores, which applies the activation itself.
        self._select = self.top_k is not None or self.class_id is not None or (
            logits and output_activation == "softmax")
        self._activation = output_activation if (logits and self._select) else "linear"
        self._cuts = [self._probability_threshold(t) if not self._select else t
                      for t in self._probabilities]

    def update(self, backend, output, target, total, weights=None):
        scores, targets = output, target
        if self._select:
            scores, targets = backend.select_scores(
                output, target, self.top_k, self.class_id, self._activation,
                out=self._workspace(backend, output))
        m = len(self._cuts)
        for j, cut in enumerate(self._cuts):
            backend.add_binary_counts(scores, targets, cut, total[2 * j:2 * j + 2], weights,
                                      which=(0, 1))
        backend.add_binary_counts(scores, targets, 0.0, total[2 * m:2 * m + 1], weights,
                                  which=(2,))

    def _workspace(self, backend, output):
        """The selected scores and targets of a batch: in the model's cache, made by the
        first (eager) step of a batch size, kept for its replays and dropped with them."""
        width = 1 if self.class_id is not None else output.shape[1]

        def make(rows):
            return (backend.empty((rows, width), output.dtype),
                    backend.empty((rows, width), output.dtype))

        if self.buffers is None:  # updated by hand, outside a model: nothing to replay
            return make(output.shape[0])
        return self.buffers.get(output.shape[0], self, make)

    def _values(self, totals, of):
        """The metric at each threshold, from the true positives over ``of`` (1:
        predicted positives, 2: actual positives); one value, or a list for a list of
        thresholds."""
        m = len(self._cuts)
        values = []
        for j in range(m):
            tp = totals[2 * j]
            base = totals[2 * j + 1] if of == 1 else totals[2 * m]
            values.append(tp / base if base else 0.0)
        return values if len(values) > 1 else values[0]  # Keras: a list of one is one

    def options(self):
        return {"thresholds": self.thresholds, "top_k": self.top_k, "class_id": self.class_id}


class Precision(_ConfusionCounts):
    """``Precision(thresholds=None, top_k=None, class_id=None)``: true positives /
    predicted positives (0 when nothing is predicted positive), at each threshold
    (default 0.5; a list gives a list of values)."""
    name = "precision"

    def result(self, totals, n, output_dim):
        return self._values(totals, 1)


class Recall(_ConfusionCounts):
    """``Recall(thresholds=None, top_k=None, class_id=None)``: true positives / actual
    positives (0 when there are none), at each threshold."""
    name = "recall"

    def result(self, totals, n, output_dim):
        return self._values(totals, 2)


class AUC(Metric):
    """``AUC(num_thresholds=200, curve="ROC")``: the area under the ROC curve ("ROC") or
    the precision-recall curve ("PR") of a binary output, as Keras computes it:
    confusion counts at ``num_thresholds`` thresholds spread over [0, 1], summed by the
    trapezoidal rule (ROC) or Keras' interpolation of precision (PR). The device keeps
    a histogram of the scores for positive and negative targets; the curve is formed
    once per epoch."""
    name = "auc"
    direction = "up"

    def __init__(self, num_thresholds=200, curve="ROC", name=None):
        super().__init__(name)
        self.num_thresholds = check_int_at_least(num_thresholds, "AUC: num_thresholds", 2)
        self.curve = check_choice(curve, "AUC: curve", ("ROC", "PR"))

    @property
    def slots(self):
        return 2 * (self.num_thresholds + 1)

    def bind(self, loss, output_activation, logits, output_dim):
        super().bind(loss, output_activation, logits, output_dim)
        self._requires(BinaryCrossentropy, "loss 'binary_crossentropy'")

    def update(self, backend, output, target, total, weights=None):
        activation = self.output_activation if self.logits else "linear"
        return backend.add_threshold_histogram(output, target, self.num_thresholds, total,
                                               activation, weights)

    def result(self, totals, n, output_dim):
        half = self.num_thresholds + 1
        return reference.auc_from_histogram(numpy.asarray(totals[:half]),
                                            numpy.asarray(totals[half:]), self.curve)

    def options(self):
        return {"num_thresholds": self.num_thresholds, "curve": self.curve}


class MeanAbsoluteError(_MeanMetric):
    name = "mean_absolute_error"
    direction = "down"
    per_row_outputs = True

    def bind(self, loss, output_activation, logits, output_dim):
        super().bind(loss, output_activation, logits, output_dim)
        if loss.name == "sparse_categorical_crossentropy":
            raise ValueError(f"metrics: {self.name!r} expects targets shaped like the "
                             f"output; got loss 'sparse_categorical_crossentropy' (integer "
                             f"labels)")

    def _add(self, backend, output, target, total, weights):
        activation = self.output_activation if self.logits else "linear"
        return backend.add_abs_error(output, target, total, activation, weights)


CLASSES = {cls.__name__: cls for cls in (
    Accuracy, BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy,
    TopKCategoricalAccuracy, SparseTopKCategoricalAccuracy, Precision, Recall, AUC,
    MeanAbsoluteError)}
# Keras's names for the metrics dnn has (keras.metrics.ALL_OBJECTS_DICT): each class's
# name and its snake_case form, the short aliases, and "accuracy" or "acc" in any case
# (for which Keras's compile picks the accuracy that fits the loss).
METRICS = {"acc": Accuracy, "mae": MeanAbsoluteError, "MAE": MeanAbsoluteError,
           **CLASSES, **{cls.name: cls for cls in CLASSES.values()}}


def direction_of(name):
    """The ``direction`` of the metric class dnn has by ``name`` (a name or alias
    ``get`` takes, "weighted_" aside), or None."""
    if name.startswith("weighted_"):
        name = name[len("weighted_"):]
    cls = METRICS.get(name) or (Accuracy if name.lower() in ("accuracy", "acc") else None)
    return None if cls is None else cls.direction


def get(identifier):
    """A Metric from a name (logged under that name, as Keras does), an instance, or a
    config dict (as saved)."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, dict):
        config = dict(identifier)
        cls = CLASSES.get(config.pop("class_name", None))
        if cls is None:  # files before format 3 named the class by its default name
            cls = METRICS.get(config.get("name"))
        if cls is None:
            raise ValueError(f"metrics: expected a metric config; got {identifier!r}")
        return cls(**config)
    cls = METRICS.get(identifier) if isinstance(identifier, str) else None
    if cls is None and isinstance(identifier, str) and identifier.lower() in ("accuracy",
                                                                                "acc"):
        cls = Accuracy
    if cls is None:
        raise ValueError(f"metrics: expected names from {', '.join(METRICS)}; "
                         f"got {identifier!r}")
    return cls(name=identifier)


def compiled(metrics, weighted_metrics=None):
    """The metrics of ``compile(metrics=, weighted_metrics=)``, the unweighted ones
    first; a weighted metric whose name an unweighted one has is logged as
    "weighted_<name>" (Keras's rule)."""
    plain = [get(m) for m in _as_list(metrics)]
    _check_distinct([m.name for m in plain], "metrics")
    weighted = []
    for identifier in _as_list(weighted_metrics):
        metric = get(identifier)
        if metric in plain:  # one object in both lists: the weighted one is its copy
            metric = get(metric.get_config())
        metric.weighted = True
        if metric.name in {m.name for m in plain}:
            metric.name = f"weighted_{metric.name}"
        weighted.append(metric)
    _check_distinct([m.name for m in weighted], "weighted_metrics")
    return plain + weighted


def _as_list(metrics):
    if metrics is None:
        return []
    if isinstance(metrics, (str, Metric, dict)):
        return [metrics]
    return list(metrics)


def _check_distinct(names, what):
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # their values would share one key in the logs and history
        raise ValueError(f"{what}: expected distinct names; got {twice[0]!r} more than once")
