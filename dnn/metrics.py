"""Metrics, as Keras names them, accumulated on the device over an epoch and read back
once (with the loss, in one transfer).

A metric owns ``slots`` running totals in device memory (counts or sums); ``update`` adds
a batch to them with no host synchronisation, so it runs inside a captured step, and
``result`` turns the host totals into the epoch's value.
"""
from __future__ import annotations

import math

import numpy

from .kernels import reference
from .utils.validation import check_int_at_least, check_number_in, check_positive_int
from .losses import BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy


class Metric:
    name = "metric"
    slots = 1

    def __init__(self):
        self.loss = self.output_activation = self.logits = None

    def bind(self, loss, output_activation, logits, output_dim):
        """Called at compile: the loss, the output activation, whether the model's
        training output holds logits, and the number of outputs."""
        self.loss, self.output_activation, self.logits = loss, output_activation, logits

    def update(self, backend, output, target, total):
        """Add this batch to ``total`` (this metric's ``slots``, on the device)."""
        raise NotImplementedError

    def result(self, totals, n, output_dim):
        """The value over ``n`` samples from the host totals."""
        return totals[0] / n

    def get_config(self):
        return {"name": self.name}

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


class Accuracy(Metric):
    """"accuracy": binary accuracy for binary_crossentropy, argmax accuracy for the
    categorical losses (as Keras picks)."""
    name = "accuracy"

    def bind(self, loss, output_activation, logits, output_dim):
        super().bind(loss, output_activation, logits, output_dim)
        self._requires((CategoricalCrossentropy, BinaryCrossentropy),
                       "a classification loss (binary_crossentropy, categorical_crossentropy "
                       "or sparse_categorical_crossentropy)")
        self.kind = "argmax" if isinstance(loss, CategoricalCrossentropy) else "threshold"
        self.threshold = self._probability_threshold(0.5)

    def update(self, backend, output, target, total):
        if self.kind == "argmax":
            return backend.add_argmax_matches(output, target, total)
        return backend.add_threshold_matches(output, target, self.threshold, total)

    def result(self, totals, n, output_dim):
        return totals[0] / (n if self.kind == "argmax" else n * output_dim)


class BinaryAccuracy(Metric):
    """``BinaryAccuracy(threshold=0.5)``: elements where the prediction > threshold
    agrees with the target > 0.5."""
    name = "binary_accuracy"

    def __init__(self, threshold=0.5):
        super().__init__()
        self.threshold = float(threshold)
        self._cut = self.threshold

    def bind(self, loss, output_activation, logits, output_dim):
        super().bind(loss, output_activation, logits, output_dim)
        self._requires(BinaryCrossentropy, "loss 'binary_crossentropy'")
        self._cut = self._probability_threshold(self.threshold)

    def update(self, backend, output, target, total):
        return backend.add_threshold_matches(output, target, self._cut, total)

    def result(self, totals, n, output_dim):
        return totals[0] / (n * output_dim)

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}


class CategoricalAccuracy(Metric):
    """Rows whose highest score is the class of the target row (one-hot targets)."""
    name = "categorical_accuracy"
    _loss_kind, _needs = (CategoricalCrossentropy, "one-hot targets (categorical_crossentropy)")

    def bind(self, loss, output_activation, logits, output_dim):
        super().bind(loss, output_activation, logits, output_dim)
        self._requires(self._loss_kind, self._needs)
        if type(self) is CategoricalAccuracy and isinstance(loss, SparseCategoricalCrossentropy):
            raise ValueError("metrics: 'categorical_accuracy' expects one-hot targets; got "
                             "loss 'sparse_categorical_crossentropy' (use "
                             "'sparse_categorical_accuracy')")

    def update(self, backend, output, target, total):
        return backend.add_argmax_matches(output, target, total)


class SparseCategoricalAccuracy(CategoricalAccuracy):
    """Rows whose highest score is the integer label."""
    name = "sparse_categorical_accuracy"
    _loss_kind, _needs = (SparseCategoricalCrossentropy,
                          "integer labels (sparse_categorical_crossentropy)")


class TopKCategoricalAccuracy(CategoricalAccuracy):
    """``TopKCategoricalAccuracy(k=5)``: rows whose target class is among the k highest
    scores (ties at the boundary count as in)."""
    name = "top_k_categorical_accuracy"

    def __init__(self, k=5):
        super().__init__()
        self.k = check_positive_int(k, f"{type(self).__name__}: k")

    def update(self, backend, output, target, total):
        return backend.add_top_k_matches(output, target, self.k, total)

    def get_config(self):
        return {"name": self.name, "k": self.k}


class SparseTopKCategoricalAccuracy(TopKCategoricalAccuracy):
    name = "sparse_top_k_categorical_accuracy"
    _loss_kind, _needs = (SparseCategoricalCrossentropy,
                          "integer labels (sparse_categorical_crossentropy)")


class _BinaryCounts(Metric):
    """Counts of ``prediction > threshold`` against ``target > 0.5`` (binary outputs):
    true positives, predicted positives, actual positives."""
    slots = 3

    def __init__(self, thresholds=0.5):
        super().__init__()
        self.thresholds = check_number_in(thresholds, f"{type(self).__name__}: thresholds",
                                          0, 1)
        self._cut = self.thresholds

    def bind(self, loss, output_activation, logits, output_dim):
        super().bind(loss, output_activation, logits, output_dim)
        self._requires(BinaryCrossentropy, "loss 'binary_crossentropy'")
        self._cut = self._probability_threshold(self.thresholds)

    def update(self, backend, output, target, total):
        return backend.add_binary_counts(output, target, self._cut, total)

    def get_config(self):
        return {"name": self.name, "thresholds": self.thresholds}


class Precision(_BinaryCounts):
    """True positives / predicted positives (0 when nothing is predicted positive)."""
    name = "precision"

    def result(self, totals, n, output_dim):
        return totals[0] / totals[1] if totals[1] else 0.0


class Recall(_BinaryCounts):
    """True positives / actual positives (0 when there are none)."""
    name = "recall"

    def result(self, totals, n, output_dim):
        return totals[0] / totals[2] if totals[2] else 0.0


class AUC(Metric):
    """``AUC(num_thresholds=200)``: the area under the ROC curve of a binary output, as
    Keras computes it: confusion counts at ``num_thresholds`` thresholds spread over
    [0, 1], summed by the trapezoidal rule. The device keeps a histogram of the scores
    for positive and negative targets; the curve is formed once per epoch."""
    name = "auc"

    def __init__(self, num_thresholds=200):
        super().__init__()
        self.num_thresholds = check_int_at_least(num_thresholds, "AUC: num_thresholds", 2)
        self.slots = 2 * (num_thresholds + 1)

    def bind(self, loss, output_activation, logits, output_dim):
        super().bind(loss, output_activation, logits, output_dim)
        self._requires(BinaryCrossentropy, "loss 'binary_crossentropy'")

    def update(self, backend, output, target, total):
        activation = self.output_activation if self.logits else "linear"
        return backend.add_threshold_histogram(output, target, self.num_thresholds, total,
                                               activation)

    def result(self, totals, n, output_dim):
        half = self.num_thresholds + 1
        return reference.auc_from_histogram(numpy.asarray(totals[:half]),
                                            numpy.asarray(totals[half:]))

    def get_config(self):
        return {"name": self.name, "num_thresholds": self.num_thresholds}


class MeanAbsoluteError(Metric):
    name = "mae"

    def bind(self, loss, output_activation, logits, output_dim):
        super().bind(loss, output_activation, logits, output_dim)
        if loss.name == "sparse_categorical_crossentropy":
            raise ValueError("metrics: 'mae' expects targets shaped like the output; got "
                             "loss 'sparse_categorical_crossentropy' (integer labels)")

    def update(self, backend, output, target, total):
        activation = self.output_activation if self.logits else "linear"
        return backend.add_abs_error(output, target, total, activation)

    def result(self, totals, n, output_dim):
        return totals[0] / (n * output_dim)


METRICS = {"accuracy": Accuracy, "acc": Accuracy, "binary_accuracy": BinaryAccuracy,
           "categorical_accuracy": CategoricalAccuracy,
           "sparse_categorical_accuracy": SparseCategoricalAccuracy,
           "top_k_categorical_accuracy": TopKCategoricalAccuracy,
           "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
           "precision": Precision, "recall": Recall, "auc": AUC,
           "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError}


def get(identifier):
    """A Metric from a name, an instance, or a config dict (as saved)."""
    if isinstance(identifier, Metric):
        return identifier
    config = dict(identifier) if isinstance(identifier, dict) else {"name": identifier}
    name = config.pop("name", None)
    if name not in METRICS:
        raise ValueError(f"metrics: expected names from {', '.join(METRICS)}; "
                         f"got {name!r}")
    return METRICS[name](**config)
