"""Data preparation on the host: splits, feature scaling and label encoding."""
from __future__ import annotations

import numpy

from ..utils.validation import check_nonnegative_int


def train_test_split(x, y, test_size=0.2, seed=0, shuffle=True, stratify=False):
    """Split into ``(x_train, x_test, y_train, y_test)``, as scikit-learn does.

    ``test_size`` is a fraction in (0, 1) (the test set gets ``ceil(n * test_size)``
    rows) or a sample count. With ``stratify`` each class keeps its proportion in both
    parts, the test set still gets exactly that many rows, and every class has at least
    one row in each part; a ValueError says so when that cannot be (a class of one row,
    or fewer test rows than classes), rather than leaving rows or classes out.
    """
    x, y = numpy.asarray(x), numpy.asarray(y)
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"y: expected {n} targets, one per sample of x; got {y.shape[0]}")
    if isinstance(test_size, float) and 0 < test_size < 1:
        n_test = int(numpy.ceil(n * test_size))
    elif isinstance(test_size, (int, numpy.integer)) and not isinstance(test_size, bool) \
            and 0 < test_size < n:
        n_test = int(test_size)
    else:
        raise ValueError(f"test_size: expected a fraction in (0, 1) or a count in [1, {n}); "
                         f"got {test_size!r}")
    if n_test >= n:
        raise ValueError(f"test_size: {test_size!r} leaves no training samples out of {n}")
    rng = numpy.random.default_rng(check_nonnegative_int(seed, "seed"))
    if stratify:
        classes, inverse = numpy.unique(y, return_inverse=True)
        inverse = inverse.reshape(-1)
        takes = stratified_test_counts(numpy.bincount(inverse), n_test, classes, test_size)
        test = []
        for c, take in enumerate(takes):
            members = numpy.flatnonzero(inverse == c)
            if shuffle:
                members = rng.permutation(members)
            test.extend(members[:take])
        test = numpy.array(sorted(test), dtype=numpy.int64)
        mask = numpy.zeros(n, bool)
        mask[test] = True
        train = numpy.flatnonzero(~mask)
        if shuffle:
            train, test = rng.permutation(train), rng.permutation(test)
    else:
        order = rng.permutation(n) if shuffle else numpy.arange(n)
        test, train = order[:n_test], order[n_test:]
    return x[train], x[test], y[train], y[test]


def stratified_test_counts(counts, n_test, classes=None, test_size=None):
    """How many rows of each class go to the test set: ``n_test`` in all, each class in
    proportion to its ``counts`` (the largest remainders get the rounding, ties to the
    first class), and at least one row of every class in each part. A ValueError says
    why when that cannot be. ``classes`` and ``test_size`` only name things in it."""
    counts = numpy.asarray(counts, dtype=numpy.int64)
    n, k = int(counts.sum()), len(counts)
    names = [c.item() if hasattr(c, "item") else c
             for c in (classes if classes is not None else range(k))]
    single = numpy.flatnonzero(counts < 2)
    if single.size:
        others = f" (and {single.size - 1} other classes)" if single.size > 1 else ""
        raise ValueError(f"stratify: class {names[single[0]]!r}{others} has only 1 sample; "
                         f"a stratified split needs at least 2 of each class, one for the "
                         f"training part and one for the test part")
    if n_test < k or n - n_test < k:
        part, rows = ("test", n_test) if n_test < k else ("training", n - n_test)
        asked = f" (test_size {test_size!r})" if test_size is not None else ""
        raise ValueError(f"stratify: {k} classes cannot each have a place in a {part} part "
                         f"of {rows} of the {n} samples{asked}; a stratified split needs "
                         f"at least one sample of every class in each part")
    quota = counts * n_test / n
    take = numpy.clip(numpy.floor(quota).astype(numpy.int64), 1, counts - 1)
    while take.sum() != n_test:  # at most k rounds: each moves one row
        short = take.sum() < n_test
        room = take < counts - 1 if short else take > 1
        gap = numpy.where(room, quota - take, -numpy.inf if short else numpy.inf)
        c = int(numpy.argmax(gap) if short else numpy.argmin(gap))
        take[c] += 1 if short else -1
    return take


class Standardizer:
    """Feature scaling to zero mean and unit variance: fit on the training set, then
    apply the same transform to validation and test data."""

    def __init__(self):
        self.mean_ = None
        self.scale_ = None

    def fit(self, x):
        x = numpy.asarray(x, dtype=numpy.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"x: expected a non-empty 2-D array; got shape {x.shape}")
        self.mean_ = x.mean(axis=0)
        std = x.std(axis=0)
        self.scale_ = numpy.where(std > 0, std, 1.0)  # constant features stay at 0
        return self

    def _check_fitted(self, x):
        if self.mean_ is None:
            raise RuntimeError("Standardizer: call fit(x_train) before transform")
        x = numpy.asarray(x, dtype=numpy.float64)
        if x.ndim != 2 or x.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"x: expected shape (n, {self.mean_.shape[0]}) as at fit; "
                             f"got {x.shape}")
        return x

    def transform(self, x):
        return (self._check_fitted(x) - self.mean_) / self.scale_

    def inverse_transform(self, x):
        return self._check_fitted(x) * self.scale_ + self.mean_

    def fit_transform(self, x):
        return self.fit(x).transform(x)

    def get_state(self):
        return {"mean": self.mean_, "scale": self.scale_}


def one_hot(labels, num_classes=None, dtype="float32"):
    """Integer labels (n,) -> one-hot rows (n, num_classes)."""
    labels = numpy.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels: expected a 1-D integer array; got shape {labels.shape} "
                         f"dtype {labels.dtype}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels: expected values in [0, {num_classes}); got range "
                         f"[{labels.min()}, {labels.max()}]")
    out = numpy.zeros((labels.shape[0], num_classes), dtype=dtype)
    out[numpy.arange(labels.shape[0]), labels] = 1
    return out


def encode_labels(values):
    """Arbitrary labels (strings, numbers) -> (int64 codes, sorted classes)."""
    classes, codes = numpy.unique(numpy.asarray(values), return_inverse=True)
    return codes.astype(numpy.int64), classes
