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


def load_csv(path, target=-1, delimiter=","):
    """Read a CSV file into ``(x, y)``.

    ``target`` is the target column, by header name or integer position (negative
    counts from the end). A first row with any non-numeric cell is taken as the header.
    Non-numeric targets are label-encoded to int64 codes in sorted order.
    """
    path = _check_file(path, "load_csv")
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f, delimiter=delimiter) if row]
    if not rows:
        raise ValueError(f"load_csv: {path!r} is empty")
    header = None
    if not all(_is_number(cell) for cell in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise ValueError(f"load_csv: {path!r} has a header but no data rows")
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"load_csv: {path!r} line {i + 1 + (header is not None)}: "
                             f"expected {width} columns; got {len(row)}")
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        if header is None or target not in header:
            names = header if header is not None else "none (the file has no header)"
            raise ValueError(f"load_csv: target: expected a column name from {names} or an "
                             f"integer position; got {target!r}")
        col = header.index(target)
    else:
        col = int(target)
        if not -width <= col < width:
            raise ValueError(f"load_csv: target: expected a column position in "
                             f"[{-width}, {width}); got {target!r}")
        col %= width
    columns = list(zip(*rows))
    features = []
    for j, column in enumerate(columns):
        if j == col:
            continue
        try:
            features.append(numpy.array([float(v) for v in column]))
        except ValueError:
            name = header[j] if header else f"#{j}"
            bad = next(v for v in column if not _is_number(v))
            raise ValueError(f"load_csv: {path!r} column {name}: expected numbers; "
                             f"got {bad!r}") from None
    if not features:
        raise ValueError(f"load_csv: {path!r}: expected at least one feature column besides "
                         f"the target")
    x = numpy.stack(features, 1)
    raw = columns[col]
    if all(_is_number(v) for v in raw):
        y = numpy.array([float(v) for v in raw])
        if numpy.array_equal(y, numpy.round(y)):
            y = y.astype(numpy.int64)
    else:
        y, _ = encode_labels([v.strip() for v in raw])
    return x, y


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
