"""Loading local data: CSV, NPZ and MNIST-style IDX files (gzipped or not)."""
from __future__ import annotations

import codecs
import csv
import functools
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


def _is_number(text, decimal_comma=False):
    try:
        float(text.replace(",", ".") if decimal_comma else text)
    except ValueError:
        return False
    return True


# A comma may be a decimal comma, so the others are tried first.
_DELIMITERS = ";\t|,"
_SNIFF_LINES = 10


def _detect_delimiter(lines):
    """The delimiter of a CSV file from its first lines: the first of ; tab | , that
    appears the same (non-zero) number of times on each of them; else the most
    frequent on the first line; a comma when none appears (a one-column file)."""
    sample = [line for line in lines[:_SNIFF_LINES] if line.strip()]
    for d in _DELIMITERS:
        counts = {line.count(d) for line in sample}
        if len(counts) == 1 and counts.pop() > 0:
            return d
    first = sample[0] if sample else ""
    counts = {d: first.count(d) for d in _DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _delimiter_name(d):
    return {"\t": "tab"}.get(d, repr(d))


def _has_header(rows, decimal_comma):
    """Whether the first row names the columns: a cell that is not a number where the
    rows below hold numbers (a headerless file's text labels are text all the way down).
    A file of one row has a header if any of its cells is text."""
    first, below = rows[0], rows[1:_SNIFF_LINES]
    number = functools.partial(_is_number, decimal_comma=decimal_comma)
    if not below:
        return not all(number(c) for c in first)
    return any(not number(cell) and all(j < len(r) and number(r[j]) for r in below)
               for j, cell in enumerate(first))


def _decode(path, data, encoding=None):
    """``(text, encoding used, note or None)`` of a file's bytes. Without ``encoding``:
    UTF-8 (a byte-order mark, as Excel writes, dropped; UTF-16 when its mark opens the
    file), else cp1252, the Windows superset of Latin-1 (latin-1 itself for the five
    bytes cp1252 leaves undefined), with a note saying so."""
    if encoding is None and data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    if encoding is not None:
        codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") \
            else encoding
        try:
            return data.decode(codec), encoding, None
        except LookupError:
            raise ValueError(f"load_csv: encoding: expected a codec name such as 'utf-8' or "
                             f"'cp1252'; got {encoding!r}") from None
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise ValueError(f"load_csv: {path!r} line {line}: "
                             f"byte 0x{data[exc.start]:02x} is not {encoding}; pass the "
                             f"file's encoding (encoding='cp1252' for Windows files; "
                             f"--encoding in the CLI) or save it as UTF-8") from None
    try:
        return data.decode("utf-8-sig"), "utf-8", None
    except UnicodeDecodeError as exc:
        bad = exc.start
    used = "cp1252"
    try:
        text = data.decode(used)
    except UnicodeDecodeError:
        used, text = "latin-1", data.decode("latin-1")
    line = data.count(b"\n", 0, bad) + 1
    note = (f"{os.path.basename(path)} is not UTF-8 (byte 0x{data[bad]:02x} on line {line}): "
            f"read as {used}; encoding= (--encoding) names another")
    return text, used, note


def _read_rows(path, delimiter, encoding=None):
    """``(delimiter, decimal comma?, header or None, [(line number, cells)], lines,
    notes)``: the file read as text (see ``_decode``)."""
    with open(path, "rb") as f:
        data = f.read()
    text, _, note = _decode(path, data, encoding)
    lines = text.splitlines()
    chosen = _detect_delimiter(lines) if delimiter is None else delimiter
    decimal_comma = chosen == ";"  # semicolon files come from locales that write 1,5
    rows = [(line, row) for line, row in enumerate(csv.reader(lines, delimiter=chosen), 1)
            if row]
    header = None
    if rows and _has_header([r for _, r in rows], decimal_comma):
        header, rows = [c.strip() for c in rows[0][1]], rows[1:]
    return chosen, decimal_comma, header, rows, lines, [note] if note else []


# The first header cell pandas writes for its index (an unnamed index), and what it
# calls that column when such a file is read and written again.
_INDEX_NAMES = ("", "Unnamed: 0")


def _index_column(header, rows, decimal_comma):
    """A note when the first column is the index pandas writes by default (unnamed,
    distinct whole numbers: a RangeIndex, or one shuffled or filtered), else None."""
    if header is None or header[0] not in _INDEX_NAMES or len(header) < 2:
        return None
    try:
        values = numpy.array([float(r[0].replace(",", ".") if decimal_comma else r[0])
                              for _, r in rows])
    except (ValueError, IndexError):
        return None
    if not (numpy.isfinite(values).all() and numpy.array_equal(values, numpy.round(values))
            and numpy.unique(values).size == values.size):
        return None
    return (f"the first column, unnamed and holding distinct whole numbers "
            f"({values.min():.0f}..{values.max():.0f}), is the index pandas writes: left out "
            f"of the features (to_csv(index=False) writes none)")


class CsvTable:
    """What ``read_csv`` found: ``x`` (float64, samples x features), ``y`` (targets;
    int64 codes for text labels), ``feature_names``, ``target_name``, ``class_names``
    (the labels in code order when the target column held text, else None), the
    ``delimiter`` used, and ``notes``: sentences on what was guessed (an encoding other
    than UTF-8, a pandas index column left out)."""

    def __init__(self, x, y, feature_names, target_name, class_names, delimiter, notes=()):
        self.x, self.y = x, y
        self.feature_names, self.target_name = feature_names, target_name
        self.class_names, self.delimiter = class_names, delimiter
        self.notes = list(notes)


def read_csv(path, target=-1, delimiter=None, class_names=None, encoding=None):
    """Read a CSV file into a ``CsvTable``.

    ``target`` is the target column, by header name or integer position (negative
    counts from the end), or None for a table of features only. The first row is a
    header when it has text where the rows below have numbers. ``delimiter`` None
    detects one of ; tab | , from the first lines; with ";" a decimal comma (1,5) reads
    as a decimal point, as those locales write it. Every feature cell must be a finite
    number: a missing or non-numeric cell is reported with its line and column.
    ``encoding`` None reads UTF-8, or cp1252 (Windows, a superset of Latin-1) when the
    file is not UTF-8, with a note in ``notes``. A first column that pandas wrote as its
    index (an unnamed header cell over distinct whole numbers) is not a feature: it is
    left out, with a note.

    Text targets become int64 codes: by their place in ``class_names`` when given (a
    model's ``class_names``, so that a file holding some of the classes gets the codes
    the model was trained with), else in sorted order.
    """
    path = _check_file(path, "load_csv")
    chosen, decimal_comma, header, rows, lines, notes = _read_rows(path, delimiter, encoding)
    width = _check_columns(path, rows, header, lines, chosen, target)
    names = header or [f"column {j}" for j in range(width)]
    col = _target_column(target, header, width)
    index_note = _index_column(header, rows, decimal_comma) if col != 0 else None
    skipped = {0} if index_note else set()
    notes += [index_note] if index_note else []
    features = [j for j in range(width) if j != col and j not in skipped]
    x = _feature_matrix(path, rows, features, names, decimal_comma)
    if col is None:
        return CsvTable(x, None, [names[j] for j in features], None, None, chosen, notes)
    raw = [row[col].strip() for _, row in rows]
    where = (path, rows, names[col])
    numbers = [v.replace(",", ".") for v in raw] if decimal_comma else raw
    if all(_is_number(v) for v in numbers):
        y = _numeric_targets(where, raw, numbers)
    else:
        y, class_names = _text_targets(where, raw, class_names)
    return CsvTable(x, y, [names[j] for j in features], names[col], class_names, chosen,
                    notes)


def _check_columns(path, rows, header, lines, chosen, target):
    """The table's width, once every row has it and there are enough columns."""
    if not rows and header is None:
        raise ValueError(f"load_csv: {path!r} is empty")
    if not rows:
        raise ValueError(f"load_csv: {path!r} has a header but no data rows")
    width = len(rows[0][1])
    for line, row in rows:
        if len(row) != width:
            raise ValueError(f"load_csv: {path!r} line {line}: expected {width} columns "
                             f"(as the first row); got {len(row)}")
    if width < (1 if target is None else 2):
        other = _detect_delimiter(lines)
        hint = f"; the file looks {_delimiter_name(other)}-separated: pass delimiter=" \
               f"{other!r} (--delimiter in the CLI)" if other != chosen else ""
        raise ValueError(f"load_csv: {path!r}: expected at least two columns (features and "
                         f"a target) separated by {_delimiter_name(chosen)}; got one{hint}")
    if target is None and width == 1 and _detect_delimiter(lines) != chosen:
        raise ValueError(f"load_csv: {path!r}: one column separated by "
                         f"{_delimiter_name(chosen)}; the file looks "
                         f"{_delimiter_name(_detect_delimiter(lines))}-separated")
    return width


def _target_column(target, header, width):
    """The target's column index, or None for a table of features only."""
    if target is None:
        return None
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        if header is None or target not in header:
            known = header if header is not None else "none (the file has no header)"
            raise ValueError(f"load_csv: target: expected a column name from {known} or an "
                             f"integer position; got {target!r}")
        return header.index(target)
    col = int(target)
    if not -width <= col < width:
        raise ValueError(f"load_csv: target: expected a column position in "
                         f"[{-width}, {width}); got {target!r}")
    return col % width


def _feature_matrix(path, rows, features, names, decimal_comma):
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
    return x


def _numeric_targets(where, raw, numbers):
    """Numeric targets (int64 when every one is whole). ``where``: (path, rows, the
    target's name), for errors."""
    path, rows, name = where
    y = numpy.array([float(v) for v in numbers])
    bad = numpy.flatnonzero(~numpy.isfinite(y))
    if bad.size:
        raise ValueError(f"load_csv: {path!r} line {rows[bad[0]][0]}, column {name} (the "
                         f"target): expected a finite number; got {raw[bad[0]]!r}")
    return y.astype(numpy.int64) if numpy.array_equal(y, numpy.round(y)) else y


def _text_targets(where, raw, class_names):
    """``(codes, class names)`` of text labels: by their place in ``class_names`` when
    given, else in sorted order."""
    path, rows, name = where
    missing = [i for i, v in enumerate(raw) if v == ""]
    if missing:
        raise ValueError(f"load_csv: {path!r} line {rows[missing[0]][0]}, column {name} (the "
                         f"target): expected a label; got a missing value")
    if class_names is None:
        y, classes = encode_labels(raw)
        return y, [str(c) for c in classes]
    class_names = [str(c) for c in class_names]
    codes = {label: i for i, label in enumerate(class_names)}
    unknown = next((i for i, v in enumerate(raw) if v not in codes), None)
    if unknown is not None:
        raise ValueError(f"load_csv: {path!r} line {rows[unknown][0]}, column {name} (the "
                         f"target): expected one of the classes {class_names}; got "
                         f"{raw[unknown]!r}")
    return numpy.array([codes[v] for v in raw], dtype=numpy.int64), class_names


def csv_columns(path, delimiter=None, encoding=None):
    """``(header names or None, number of columns)`` of a CSV file, as ``read_csv``
    sees them."""
    path = _check_file(path, "load_csv")
    _, _, header, rows, _, _ = _read_rows(path, delimiter, encoding)
    return header, len(header) if header is not None else (len(rows[0][1]) if rows else 0)


def load_csv(path, target=-1, delimiter=None, class_names=None, encoding=None):
    """``(x, y)`` of a CSV file: ``read_csv(path, target, delimiter, class_names,
    encoding)``'s arrays."""
    table = read_csv(path, target, delimiter, class_names, encoding)
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
