"""What the command line infers from the data: the task (loss, output units and
activation, and why) and the hidden layers when ``--layers`` is auto.

The rule for a target of numbers (``--task`` overrides it, ``--loss`` too):
- values that are not all whole numbers, negative values, or several target columns:
  regression (a linear output, mean squared error);
- only 0 and 1: binary classification (one sigmoid unit, binary cross-entropy);
- other whole numbers from 0: class labels when they are few, at most
  ``MAX_CLASSES`` (1000) distinct values and at most 10% of the rows (5% above 1000
  rows), as AutoGluon decides; more than that, a quantity measured in whole numbers
  (a count, a score, a price), so regression.
Text labels are always classes.
"""
from __future__ import annotations

import numpy

from .errors import UsageError

# The circles example's network, the default on the circles (the README's first command).
CIRCLES_LAYERS = (4, 6, 6, 4)

TASKS = ("auto", "classification", "regression")
CLASSIFICATION_LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy")
MAX_CLASSES = 1000
# Above this many rows, whole numbers are labels only if at most 5% of them are distinct.
LARGE_DATA_ROWS = 1000


def label_share(rows):
    """The largest share of distinct values among ``rows`` whole-number targets that
    still reads as class labels."""
    return 0.10 if rows <= LARGE_DATA_ROWS else 0.05


class Task:
    """``loss``, output ``units`` and ``activation``, and ``why`` (a phrase for the
    CLI to print) they were chosen."""

    def __init__(self, loss, units, activation, why):
        self.loss, self.units, self.activation, self.why = loss, units, activation, why

    @property
    def classification(self):
        return self.activation != "linear"

    def __iter__(self):  # (loss, units, activation), as infer_task returns
        return iter((self.loss, self.units, self.activation))


def _value(v):
    v = v.item() if hasattr(v, "item") else v
    return int(v) if isinstance(v, float) and v.is_integer() else v


class _Targets:
    """What the rule looks at in the targets ``y``."""

    def __init__(self, y):
        self.y = y
        self.rows = y.shape[0]
        self.width = 1 if y.ndim == 1 else y.shape[1]
        numeric = y.dtype.kind in "iubf"
        self.whole = numeric and (y.dtype.kind in "iub" or
                                  bool(numpy.array_equal(y, numpy.round(y))))
        self.values = numpy.unique(y) if y.ndim == 1 and numeric else None

    def labels(self):
        """Whether the values can be class codes: one column of whole numbers from 0."""
        return self.values is not None and self.whole and \
            (self.values.size == 0 or self.values.min() >= 0)

    def binary(self):
        return self.labels() and set(self.values.tolist()) <= {0, 1}

    def classes_for(self, loss):
        """The output units that class labels need under ``loss``."""
        if loss == "binary_crossentropy":
            return self.width
        return int(self.values.max()) + 1 if self.y.ndim == 1 else self.width


def choose_task(y, loss="auto", task="auto", text_labels=False):
    """The ``Task`` for targets ``y``: from ``loss`` when one is named, else from
    ``task`` when it is "classification" or "regression", else by the module's rule.
    ``text_labels``: the targets are codes of text labels (always classes)."""
    y = numpy.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # one target column, as (n, 1): the same task
        y = y[:, 0]
    t = _Targets(y)
    if task not in TASKS:
        raise UsageError(f"--task: expected one of {', '.join(TASKS)}; got {task!r}")
    if loss != "auto":
        return _from_loss(t, loss, task)
    if task == "regression":
        if text_labels:
            raise UsageError("--task regression: expected numeric targets; the target "
                             "column holds text labels")
        return Task("mse", t.width, "linear", "--task regression")
    if task == "classification":
        if not (text_labels or t.labels()):
            raise UsageError(f"--task classification: expected class labels (text, or whole "
                             f"numbers from 0 in one column); got {_not_labels(t)}")
        return _classes(t, "--task classification")
    if text_labels:
        return _classes(t, "the target holds text labels")
    return _auto(t)


def _from_loss(t, loss, task):
    wants = "classification" if loss == "binary_crossentropy" or \
        loss in CLASSIFICATION_LOSSES else "regression"
    if task not in ("auto", wants):
        raise UsageError(f"--task {task}: expected a {task} loss; --loss {loss} is for "
                         f"{wants}")
    if wants == "regression":
        return Task(loss, t.width, "linear", f"--loss {loss}")
    if loss == "sparse_categorical_crossentropy" and not t.labels():
        raise UsageError(f"--loss {loss}: expected class labels (whole numbers from 0); "
                         f"got {_not_labels(t)}")
    activation = "sigmoid" if loss == "binary_crossentropy" else "softmax"
    return Task(loss, t.classes_for(loss), activation, f"--loss {loss}")


def _not_labels(t):
    if t.width > 1:
        return f"{t.width} columns"
    if not t.whole:
        fractional = t.y[t.y != numpy.round(t.y)]
        return f"values that are not whole numbers, such as {_value(fractional[0])}"
    return f"negative values, such as {_value(t.values[0])}"


def _classes(t, why):
    if t.binary():
        return Task("binary_crossentropy", 1, "sigmoid", why)
    loss = "sparse_categorical_crossentropy"
    return Task(loss, t.classes_for(loss), "softmax", why)


def _auto(t):
    if not t.labels():
        return Task("mse", t.width, "linear", f"the target has {_not_labels(t)}")
    if t.binary():
        return _classes(t, "the target holds only 0 and 1")
    distinct, share = t.values.size, label_share(t.rows)
    numbers = f"{distinct} distinct whole numbers in {t.rows} rows"
    if distinct <= MAX_CLASSES and distinct <= share * t.rows:
        return _classes(t, f"{numbers} (at most {share:.0%}): class labels")
    limit = f"more than {MAX_CLASSES}" if distinct > MAX_CLASSES else f"over {share:.0%}"
    return Task("mse", 1, "linear", f"{numbers} ({limit}): a quantity, not labels")


def check_classes(y, target_name, class_names=None):
    """Raise a UsageError unless the class labels ``y`` hold at least two classes."""
    present = numpy.unique(numpy.asarray(y))
    if present.size >= 2:
        return
    if present.size == 0:
        raise UsageError(f"target: expected at least two classes; {target_name!r} is empty")
    only = present[0]
    label = class_names[int(only)] if class_names else _value(only)
    raise UsageError(f"target: expected at least two classes to tell apart; the column "
                     f"{target_name!r} holds one, {label!r}, in all {len(y)} rows")


def infer_task(y, loss="auto"):
    """``(loss, output_units, output_activation)``: from the targets' values when
    ``loss`` is "auto" (the rule above), else the output that ``loss`` needs."""
    return tuple(choose_task(y, loss))


def default_layers(n_features, n_outputs):
    """The hidden layers when ``--layers`` is not given: two layers of w units, w the
    power of two at or above 2 x (features + outputs), within [16, 256]. The circles
    keep the circles example's 4,6,6,4 (see cmd_train)."""
    width = 16
    while width < min(256, 2 * (n_features + n_outputs)):
        width *= 2
    return [width, width]
