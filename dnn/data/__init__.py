"""Data on the host, in NumPy: built-in datasets (``datasets``), files (``io``: CSV, npz,
IDX) and preparation (``preprocessing``: splits, scaling, label coding)."""
from .datasets import (STUDENT_FEATURES, load_digits, make_circles, make_moons, make_spirals,
                       make_student, make_xor)
from .io import CsvTable, csv_columns, load_csv, load_idx, load_npz, read_csv, write_idx
from .preprocessing import Standardizer, encode_labels, one_hot, train_test_split

__all__ = [
    "CsvTable", "STUDENT_FEATURES", "Standardizer", "csv_columns", "encode_labels", "load_csv",
    "load_digits", "load_idx", "load_npz", "make_circles", "make_moons", "make_spirals",
    "make_student", "make_xor", "one_hot", "read_csv", "train_test_split", "write_idx",
]
