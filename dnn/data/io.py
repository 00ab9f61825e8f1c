"""Loading local data: CSV, NPZ and MNIST-style IDX files (gzipped or not)."""
from __future__ import annotations

import csv
import gzip
import os
import struct

import numpy

from .preprocessing import encode_labels

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _check_file(path, what):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: path: no such file: {path!r}")
    return path


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


_DELIMITERS = ",;\t|"


def _detect_delimiter(first_line):
    """The delimiter of a CSV file from its first line: the most frequent of , ; tab |
    (a comma when none appears: a one-column file)."""
    counts = {d: first_line.count(d) for d in _DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _delimiter_name(d):
    return {"\t": "tab"}.get(d, repr(d))


class CsvTable:
    """What ``read_csv`` found: ``x`` (float64, samples x features), ``y`` (targets;
    int64 codes for text labels), ``feature_names``, ``target_name``, ``class_names``
    (the labels in code order when the target column held text, else None) and the
    ``delimiter`` used."""

    def __init__(self, x, y, feature_names, target_name, class_names, delimiter):
        self.x, self.y = x, y
        self.feature_names, self.target_name = feature_names, target_name
        self.class_names, self.delimiter = class_names, delimiter


def read_csv(path, target=-1, delimiter=None):
    """Read a CSV file into a ``CsvTable``.

    ``target`` is the target column, by header name or integer position (negative
    counts from the end), or None for a table of features only. A first row with any
    non-numeric cell is taken as the header.
    ``delimiter`` None detects one of , ; tab | from the first line; with ";" a decimal
    comma (1,5) reads as a decimal point, as those locales write it. Every feature cell
    must be a finite number: a missing or non-numeric cell is reported with its line
    and column. Non-numeric targets are label-encoded to int64 codes in sorted order.
    """
    path = _check_file(path, "load_csv")
    with open(path, newline="") as f:
        text = f.read()
    first = text.split("\n", 1)[0]
    chosen = _detect_delimiter(first) if delimiter is None else delimiter
    rows = [(line, row) for line, row in enumerate(csv.reader(text.splitlines(),
                                                               delimiter=chosen), 1) if row]
    if not rows:
        raise ValueError(f"load_csv: {path!r} is empty")
    header = None
    if not all(_is_number(cell) for cell in rows[0][1]):
        header, rows = [c.strip() for c in rows[0][1]], rows[1:]
    if not rows:
        raise ValueError(f"load_csv: {path!r} has a header but no data rows")
    width = len(rows[0][1])
    for line, row in rows:
        if len(row) != width:
            raise ValueError(f"load_csv: {path!r} line {line}: expected {width} columns "
                             f"(as the first row); got {len(row)}")
    if width < (1 if target is None else 2):
        other = _detect_delimiter(first)
        hint = f"; the file looks {_delimiter_name(other)}-separated: pass delimiter=" \
               f"{other!r} (--delimiter in the CLI)" if other != chosen else ""
        raise ValueError(f"load_csv: {path!r}: expected at least two columns (features and "
                         f"a target) separated by {_delimiter_name(chosen)}; got one{hint}")
    if target is None and width == 1 and _detect_delimiter(first) != chosen:
        raise ValueError(f"load_csv: {path!r}: one column separated by "
                         f"{_delimiter_name(chosen)}; the file looks "
                         f"{_delimiter_name(_detect_delimiter(first))}-separated")
    names = header or [f"column {j}" for j in range(width)]
    if target is None:  # features only (data to predict on)
        col = None
    elif isinstance(target, str) and not target.lstrip("-").isdigit():
        if header is None or target not in header:
            known = header if header is not None else "none (the file has no header)"
            raise ValueError(f"load_csv: target: expected a column name from {known} or an "
                             f"integer position; got {target!r}")
        col = header.index(target)
    else:
        col = int(target)
        if not -width <= col < width:
            raise ValueError(f"load_csv: target: expected a column position in "
                             f"[{-width}, {width}); got {target!r}")
        col %= width
    # Semicolon-separated files come from locales that write 1,5 for 1.5.
    decimal_comma = chosen == ";"
    features = [j for j in range(width) if j != col]
    x = numpy.empty((len(rows), len(features)))
    for i, (line, row) in enumerate(rows):
        for k, j in enumerate(features):
            cell = row[j].strip()
            try:
                value = float(cell.replace(",", ".") if decimal_comma else cell)
            except ValueError:
                value = None
            if value is None or not numpy.isfinite(value):
                what = "a missing value" if cell.lower() in ("", "na", "nan", "null", "none",
                                                             "?") else repr(cell)
                raise ValueError(f"load_csv: {path!r} line {line}, column {names[j]}: "
                                 f"expected a finite number; got {what}")
            x[i, k] = value
    if col is None:
        return CsvTable(x, None, [names[j] for j in features], None, None, chosen)
    raw = [row[col].strip() for _, row in rows]
    class_names = None
    numbers = [v.replace(",", ".") for v in raw] if decimal_comma else raw
    if all(_is_number(v) for v in numbers):
        y = numpy.array([float(v) for v in numbers])
        bad = numpy.flatnonzero(~numpy.isfinite(y))
        if bad.size:
            raise ValueError(f"load_csv: {path!r} line {rows[bad[0]][0]}, column "
                             f"{names[col]} (the target): expected a finite number; got "
                             f"{raw[bad[0]]!r}")
        if numpy.array_equal(y, numpy.round(y)):
            y = y.astype(numpy.int64)
    else:
        missing = [i for i, v in enumerate(raw) if v == ""]
        if missing:
            raise ValueError(f"load_csv: {path!r} line {rows[missing[0]][0]}, column "
                             f"{names[col]} (the target): expected a label; got a missing "
                             f"value")
        y, classes = encode_labels(raw)
        class_names = [str(c) for c in classes]
    return CsvTable(x, y, [names[j] for j in features], names[col], class_names, chosen)


def csv_columns(path, delimiter=None):
    """``(header names or None, number of columns)`` from the first row of a CSV file."""
    path = _check_file(path, "load_csv")
    with open(path, newline="") as f:
        first = f.readline()
    chosen = _detect_delimiter(first) if delimiter is None else delimiter
    row = next(csv.reader([first], delimiter=chosen), [])
    names = None if all(_is_number(c) for c in row) else [c.strip() for c in row]
    return names, len(row)


def load_csv(path, target=-1, delimiter=None):
    """``(x, y)`` of a CSV file: ``read_csv(path, target, delimiter)``'s arrays."""
    table = read_csv(path, target, delimiter)
    return table.x, table.y


def load_npz(path, x_key="x", y_key="y"):
    """Read ``(x, y)`` from an .npz file (never unpickles)."""
    path = _check_file(path, "load_npz")
    try:
        with numpy.load(path, allow_pickle=False) as data:
            missing = [k for k in (x_key, y_key) if k not in data.files]
            if missing:
                raise ValueError(f"load_npz: {path!r}: expected arrays {x_key!r} and "
                                 f"{y_key!r}; got {sorted(data.files)}")
            return data[x_key], data[y_key]
    except (OSError, EOFError) as exc:
        raise ValueError(f"load_npz: {path!r} is not a readable .npz file: {exc}") from exc


def _open_maybe_gzip(path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def load_idx(path):
    """Read an IDX file (the MNIST format), gzipped or not, as a NumPy array."""
    path = _check_file(path, "load_idx")
    with _open_maybe_gzip(path) as f:
        try:
            data = f.read()
        except (OSError, EOFError) as exc:
            raise ValueError(f"load_idx: {path!r}: cannot read: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"load_idx: {path!r}: expected IDX magic 00 00 <type> <ndim>; got "
                         f"{data[:4].hex(' ') if data else 'an empty file'}")
    dtype, ndim = numpy.dtype(_IDX_TYPES[data[2]]), data[3]
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise ValueError(f"load_idx: {path!r}: truncated header")
    shape = struct.unpack(f">{ndim}I", data[4:header_end])
    expected = int(numpy.prod(shape)) * dtype.itemsize
    if len(data) - header_end != expected:
        raise ValueError(f"load_idx: {path!r}: expected {expected} data bytes for shape "
                         f"{shape}; got {len(data) - header_end}")
    arr = numpy.frombuffer(data, dtype=dtype, offset=header_end).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path, array, compress=None):
    """Write ``array`` as an IDX file; gzipped when ``compress`` or the name ends .gz."""
    array = numpy.asarray(array)
    codes = {numpy.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"write_idx: array: expected dtype uint8, int8, int16, int32, float32 "
                         f"or float64; got {array.dtype}")
    payload = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) \
        + array.astype(_IDX_TYPES[code]).tobytes()
    path = os.fspath(path)
    if compress or (compress is None and path.endswith(".gz")):
        payload = gzip.compress(payload)
    with open(path, "wb") as f:
        f.write(payload)
