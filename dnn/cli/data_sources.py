"""What the command line trains on: the built-in data sets by name, and files (.csv,
.tsv, .npz, .npy, .idx) read into a ``Dataset`` with names for what it prints and
saves (a large .npy or CSV as a memmap: see ``streaming``)."""
from __future__ import annotations

import os

import numpy

from ..data import (load_digits, load_idx, load_npz, make_circles, make_moons,
                    make_spirals, make_student, make_xor, read_csv)
from .errors import UsageError
from .streaming import CACHE_SUFFIX, load_large_csv, load_npy

# name -> (loader(seed), description, target name)
DATASETS = {
    "circles": (lambda s: make_circles(1000, factor=0.5, noise=0.08, seed=s),
                "two concentric circles, 1000 samples (the circles example)", "label"),
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
    """What ``load_data`` read: ``x``, ``y`` (None when there is no target), names for
    what the CLI prints and saves with the model, and ``notes`` on what was guessed
    while reading (an encoding, a pandas index column left out)."""

    def __init__(self, x, y, source, target_name=None, feature_names=None, class_names=None,
                 target_note=""):
        self.x, self.y, self.source = x, y, source
        self.target_name, self.feature_names = target_name, feature_names
        self.class_names, self.target_note = class_names, target_note
        self.notes = []


class Reading:
    """How to read a data file: the CSV ``delimiter`` and ``encoding`` (None: detected)
    and the NPZ key of x (``--delimiter``, ``--encoding``, ``--x-key``)."""

    def __init__(self, delimiter=None, encoding=None, x_key="x"):
        self.delimiter, self.encoding, self.x_key = delimiter, encoding, x_key

    @classmethod
    def from_args(cls, args):
        return cls(getattr(args, "delimiter", None), getattr(args, "encoding", None),
                   getattr(args, "x_key", "x"))

    def csv_delimiter(self, path):
        """The delimiter to read the CSV ``path`` with: the one given, else a tab for a
        .tsv file, else None (detected)."""
        if self.delimiter is None and path.lower().endswith(".tsv"):
            return "\t"
        return self.delimiter


CSV_SUFFIXES = (".csv", ".tsv")


def load_data(source, target=None, seed=0, reading=None, with_target=True,
              class_names=None):
    """A ``Dataset`` from a dataset name or a .csv / .tsv / .npz / .idx(.gz) path.
    ``with_target`` False reads a CSV of features only (unless ``target`` is given).
    ``reading``: a ``Reading`` (the defaults when None)."""
    reading = reading or Reading()
    if source in DATASETS:
        loader, _, target_name = DATASETS[source]
        x, y = loader(seed)
        return Dataset(x, y, source, target_name, class_names=None)
    if not os.path.exists(source):
        names = ", ".join(DATASETS)
        raise UsageError(f"data: expected a dataset name ({names}) or an existing .csv, "
                         f".tsv, .npz, .npy or .idx file; got {source!r}")
    lower = source.lower()
    if lower.endswith(".npy"):  # a memmap when it is large: see streaming
        x, y, target_name = load_npy(source, target)
        return Dataset(x, y, source, target_name)
    if lower.endswith(CSV_SUFFIXES):
        return _load_csv(source, target, reading, with_target, class_names)
    if lower.endswith(".npz"):
        return _load_npz(source, target, reading.x_key)
    if lower.endswith((".idx", ".idx.gz")) or "-idx" in lower or "ubyte" in lower:
        if target is None:
            raise UsageError("--target: expected the labels IDX file for IDX images; got none")
        x = load_idx(source)
        return Dataset(x.reshape(x.shape[0], -1).astype(numpy.float64), load_idx(target),
                       source, os.path.basename(target))
    raise UsageError(f"data: expected a .csv, .tsv, .npz, .npy or .idx(.gz) file; got "
                     f"{source!r}")


def _load_csv(source, target, reading, with_target, class_names):
    """A ``Dataset`` of a CSV: read whole, or when it is too large through its memmap
    cache (``streaming``), by the same rules. ``target`` None: the last column, or with
    ``with_target`` False a table of features only. A model's ``class_names`` code a
    CSV's text labels as the model was trained (a file may hold only some of the
    classes); without them, in sorted order."""
    column = None if target is None and not with_target else -1 if target is None else target
    table = load_large_csv(source, column, reading, class_names)
    streamed = table is not None
    if not streamed:
        table = read_csv(source, column, reading.csv_delimiter(source), class_names,
                         reading.encoding)
    note = " (the last column; --target chooses another)" if target is None and \
        column is not None else ""
    data = Dataset(table.x, table.y, source, table.target_name, table.feature_names,
                   table.class_names, note)
    data.notes = list(table.notes)
    if streamed:
        data.notes.append(f"{os.path.basename(source)} is larger than DNN_STREAM_MB: its "
                          f"rows were read in chunks into {os.path.basename(source)}"
                          f"{CACHE_SUFFIX} beside it (made again when the CSV changes)")
    return data


def _load_npz(source, target, x_key):
    y_key = target or "y"
    try:
        x, y = load_npz(source, x_key=x_key, y_key=y_key)
    except ValueError as exc:
        if "expected arrays" not in str(exc):
            raise
        raise UsageError(f"{exc}: choose x with --x-key and y with --target") from None
    return Dataset(x, y, source, y_key)
