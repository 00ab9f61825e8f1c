"""Metrics accumulated on the device over an epoch and read back once.

``update`` adds this batch's count or sum into a (1,) device buffer, with no host
synchronisation (so it runs inside a captured step); the epoch value is the total
divided by ``denominator``.
"""
from __future__ import annotations

from .losses import BinaryCrossentropy, CategoricalCrossentropy


class Metric:
    name = "metric"

    def bind(self, loss, output_activation, logits):
        """Called at compile: the loss, the output activation, and whether the model's
        training output holds logits."""
        self.loss, self.output_activation, self.logits = loss, output_activation, logits

    def update(self, backend, output, target, total):
        """Add this batch's count or sum to ``total`` ((1,) on the device)."""
        raise NotImplementedError

    def denominator(self, n, output_dim):
        return n * output_dim


class Accuracy(Metric):
    """Binary accuracy for binary_crossentropy, argmax accuracy for categorical losses."""
    name = "accuracy"

    def bind(self, loss, output_activation, logits):
        super().bind(loss, output_activation, logits)
        if isinstance(loss, CategoricalCrossentropy):
            self.kind = "argmax"
        elif isinstance(loss, BinaryCrossentropy):
            self.kind = "threshold"
            self.threshold = 0.0 if logits else 0.5  # sigmoid(0) = 0.5
        else:
            raise ValueError(f"metrics: 'accuracy' expects a classification loss "
                             f"(binary_crossentropy, categorical_crossentropy or "
                             f"sparse_categorical_crossentropy); got loss {loss.name!r}")

    def update(self, backend, output, target, total):
        if self.kind == "argmax":
            return backend.add_argmax_matches(output, target, total)
        return backend.add_threshold_matches(output, target, self.threshold, total)

    def denominator(self, n, output_dim):
        return n if self.kind == "argmax" else n * output_dim


class MeanAbsoluteError(Metric):
    name = "mae"

    def bind(self, loss, output_activation, logits):
        super().bind(loss, output_activation, logits)
        if loss.name == "sparse_categorical_crossentropy":
            raise ValueError("metrics: 'mae' expects targets shaped like the output; got "
                             "loss 'sparse_categorical_crossentropy' (integer labels)")

    def update(self, backend, output, target, total):
        activation = self.output_activation if self.logits else "linear"
        return backend.add_abs_error(output, target, total, activation)


METRICS = {"accuracy": Accuracy, "acc": Accuracy, "mae": MeanAbsoluteError,
           "mean_absolute_error": MeanAbsoluteError}


def get(identifier):
    if isinstance(identifier, Metric):
        return identifier
    if identifier not in METRICS:
        raise ValueError(f"metrics: expected names from {', '.join(METRICS)}; "
                         f"got {identifier!r}")
    return METRICS[identifier]()
