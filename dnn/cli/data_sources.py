"""What the command line trains on: the built-in data sets by name, and files (.csv,
.npz, .npy, .idx) read into a ``Dataset`` with names for what it prints and saves
(a large .npy or CSV as a memmap: see ``streaming``)."""
from __future__ import annotations

import os

import numpy

from ..data import (load_digits, load_idx, load_npz, make_circles, make_moons,
                    make_spirals, make_student, make_xor, read_csv)
from .errors import UsageError
from .streaming import load_large_csv, load_npy

# name -> (loader(seed), description, target name)
DATASETS = {
    "circles": (lambda s: make_circles(1000, factor=0.5, noise=0.08, seed=s),
                "two concentric circles, 1000 samples (seed 002)", "label"),
    "moons": (lambda s: make_moons(1000, noise=0.2, seed=s), "two interleaving half moons",
              "label"),
    "xor": (lambda s: make_xor(400, noise=0.15, seed=s), "four clusters labelled by XOR",
            "label"),
    "spirals": (lambda s: make_spirals(900, n_classes=3, noise=0.2, seed=s),
                "three interleaved spiral arms", "label"),
    "student": (lambda s: make_student(1000, seed=s),
                "pass/fail from lectures, homework hours and disconnections", "passed"),
    "student-score": (lambda s: make_student(1000, regression=True, seed=s),
                      "the student example as score regression", "score"),
    "digits": (lambda s: load_digits(), "scikit-learn's 8x8 digits (needs scikit-learn)",
               "digit"),
}

class Dataset:
    """What ``load_data`` read: ``x``, ``y`` (None when there is no target), and names
    for what the CLI prints and saves with the model."""

    def __init__(self, x, y, source, target_name=None, feature_names=None, class_names=None,
                 target_note=""):
        self.x, self.y, self.source = x, y, source
        self.target_name, self.feature_names = target_name, feature_names
        self.class_names, self.target_note = class_names, target_note


def load_data(source, target=None, seed=0, delimiter=None, with_target=True,
              class_names=None):
    """A ``Dataset`` from a dataset name or a .csv / .npz / .idx(.gz) path.
    ``with_target`` False reads a CSV of features only (unless ``target`` is given)."""
    if source in DATASETS:
        loader, _, target_name = DATASETS[source]
        x, y = loader(seed)
        return Dataset(x, y, source, target_name, class_names=None)
    if not os.path.exists(source):
        names = ", ".join(DATASETS)
        raise UsageError(f"data: expected a dataset name ({names}) or an existing .csv, .npz, .npy "
                         f"or .idx file; got {source!r}")
    lower = source.lower()
    if lower.endswith(".npy"):  # a memmap when it is large: see streaming
        x, y, target_name = load_npy(source, target)
        return Dataset(x, y, source, target_name)
    if lower.endswith(".csv"):
        streamed = _large_csv(source, target, delimiter, with_target, class_names)
        if streamed is not None:
            return streamed
        if target is None and not with_target:
            table = read_csv(source, None, delimiter)
            return Dataset(table.x, None, source, feature_names=table.feature_names)
        # A model's class names code a CSV's text labels as the model was trained
        # (a file may hold only some of the classes); without them, sorted order.
        table = read_csv(source, -1 if target is None else target, delimiter, class_names)
        note = " (the last column; --target chooses another)" if target is None else ""
        return Dataset(table.x, table.y, source, table.target_name, table.feature_names,
                       table.class_names, note)
    if lower.endswith(".npz"):
        x, y = load_npz(source, y_key=target or "y")
        return Dataset(x, y, source, target or "y")
    if lower.endswith((".idx", ".idx.gz")) or "-idx" in lower or "ubyte" in lower:
        if target is None:
            raise UsageError("--target: expected the labels IDX file for IDX images; got none")
        x = load_idx(source)
        return Dataset(x.reshape(x.shape[0], -1).astype(numpy.float64), load_idx(target),
                       source, os.path.basename(target))
    raise UsageError(f"data: expected a .csv, .npz, .npy or .idx(.gz) file; got {source!r}")


def _large_csv(source, target, delimiter, with_target, class_names):
    """A ``Dataset`` of a CSV too large to read whole, through its memmap cache (see
    ``streaming``), or None for one read whole."""
    column = -1 if target is None and with_target else target
    found = load_large_csv(source, column, delimiter, class_names)
    if found is None:
        return None
    x, y, features, target_name, classes = found
    note = " (the last column; --target chooses another)" if column == -1 else ""
    return Dataset(x, y, source, target_name, features, classes, note)
