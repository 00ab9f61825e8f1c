"""A classifier's labels and its network's outputs, both ways.

Three kinds of target, as scikit-learn's ``type_of_target`` names them:
- "binary": two classes of any labels, one sigmoid unit, binary cross-entropy on 0/1;
- "multiclass": k > 2 classes, k softmax units, sparse categorical cross-entropy on
  the class indices;
- "multilabel-indicator": an (n, k) 0/1 matrix, k sigmoid units, binary cross-entropy
  on each, as ``MultiLabelBinarizer`` gives.
Class labels may be numbers or strings; ``classes_`` holds them sorted.
"""
from __future__ import annotations

import numpy
from scipy import sparse
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import column_or_1d

from .network import Output

KINDS = ("binary", "multiclass", "multilabel-indicator")


class ClassEncoding:
    """The classes of one fitted classifier (``classes``: sorted labels; for multi-label
    targets the column indices) and how its targets and outputs map to them."""

    def __init__(self, kind, classes, label_dtype):
        self.kind = kind
        self.classes = classes
        self.label_dtype = label_dtype  # multi-label: the dtype predict returns

    @classmethod
    def from_targets(cls, owner, y, classes=None):
        """The encoding of targets ``y`` (checked by ``check``), or of all ``classes``
        when given (``partial_fit``'s first call). Raises for fewer than two classes."""
        kind = kind_of(owner, y)
        if kind == "multilabel-indicator":
            return cls(kind, numpy.arange(y.shape[1]), y.dtype)
        labels = numpy.unique(y if classes is None else numpy.asarray(classes))
        if classes is not None:
            missing = numpy.setdiff1d(numpy.unique(y), labels)
            if missing.size:
                raise ValueError(f"{owner}: classes: expected every label of y among "
                                 f"them; y has {missing[:5].tolist()} outside "
                                 f"{labels.tolist()[:10]}")
        if labels.size < 2:
            raise ValueError(f"{owner}: y: expected at least 2 classes; got 1 class "
                             f"({labels.tolist()[0]!r})")
        return cls("binary" if labels.size == 2 else "multiclass", labels, labels.dtype)

    @property
    def output(self):
        if self.kind == "binary":
            return Output(1, "sigmoid", "binary_crossentropy")
        if self.kind == "multiclass":
            return Output(self.classes.size, "softmax", "sparse_categorical_crossentropy")
        return Output(self.classes.size, "sigmoid", "binary_crossentropy")

    def encode(self, owner, y):
        """The targets dnn trains on: 0/1 (n,) for binary, class indices (n,) for
        multiclass, 0/1 (n, k) for multi-label."""
        if self.kind == "multilabel-indicator":
            if y.ndim != 2 or y.shape[1] != self.classes.size:
                raise ValueError(f"{owner}: y: expected a multi-label indicator matrix of "
                                 f"{self.classes.size} columns (as in the first fit); got "
                                 f"shape {y.shape}")
            return y.astype(numpy.float64)
        if y.ndim != 1:
            raise ValueError(f"{owner}: y: expected labels of shape (n,) (as in the first "
                             f"fit); got shape {y.shape}")
        index = numpy.searchsorted(self.classes, y)
        index = numpy.minimum(index, self.classes.size - 1)
        unknown = self.classes[index] != y
        if unknown.any():
            raise ValueError(f"{owner}: y: expected labels among classes_ "
                             f"{self.classes.tolist()[:10]}; got {y[unknown][0]!r}")
        return index.astype(numpy.float64) if self.kind == "binary" else index

    def probabilities(self, outputs):
        """``predict_proba``: (n, 2) for binary (the first class, then the second),
        (n, k) for the others (multi-label: each label's own probability)."""
        if self.kind == "binary":
            return numpy.hstack([1 - outputs, outputs])
        return outputs

    def labels(self, outputs):
        """``predict`` from the network's outputs: one label per row, or for multi-label
        targets the (n, k) indicator in y's dtype (a probability above 0.5 is a 1)."""
        if self.kind == "binary":
            return self.classes[(outputs[:, 0] > 0.5).astype(numpy.intp)]
        if self.kind == "multiclass":
            return self.classes[outputs.argmax(axis=1)]
        return (outputs > 0.5).astype(self.label_dtype)


def check(y):
    """``y`` as a dense array of labels (n,) or a multi-label indicator (n, k): a column
    vector (n, 1) becomes (n,), with scikit-learn's DataConversionWarning; continuous
    targets raise scikit-learn's "Unknown label type" error."""
    if sparse.issparse(y):
        y = y.toarray()
    y = numpy.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)
    check_classification_targets(y)
    return y


def kind_of(owner, y):
    """One of ``KINDS``, or a ValueError naming what ``y`` is."""
    kind = type_of_target(y, input_name="y")
    if kind not in KINDS:
        raise ValueError(f"{owner}: y: expected class labels of shape (n,) or a multi-label "
                         f"indicator matrix (n, k); got targets of type {kind!r}")
    return kind
