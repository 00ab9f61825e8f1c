"""Loading local data: CSV, NPZ and MNIST-style IDX files (gzipped or not)."""
from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import gzip
import itertools
import math
import os
import struct

import numpy

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


# Bytes read at a time where a whole file is checked against its encoding, and rows
# parsed at a time where a file is read in chunks.
_BLOCK_BYTES = 1 << 20
CHUNK_ROWS = 1 << 16


def _first_undecodable(path, codec):
    """``(byte, line)`` of the first byte of the file that ``codec`` cannot decode, or
    None when it decodes all of it. Read in blocks, so a file of any size."""
    decoder = codecs.getincrementaldecoder(codec)()
    lines = 0  # newlines in the blocks decoded so far
    with open(path, "rb") as f:
        while True:
            block = f.read(_BLOCK_BYTES)
            held = decoder.getstate()[0]  # the last block's incomplete character
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                data, bad = exc.object, exc.start  # data: what it held, then the block
                return data[bad], lines - held.count(b"\n") + data.count(b"\n", 0, bad) + 1
            if not block:
                return None
            lines += block.count(b"\n")


def _encoding(path, encoding=None):
    """``(codec, note or None)`` that reads the file. With ``encoding``, that one (the
    whole file checked against it). Without: UTF-8 (a byte-order mark, as Excel writes,
    dropped; UTF-16 when its mark opens the file), else cp1252, the Windows superset of
    Latin-1 (latin-1 itself for the five bytes cp1252 leaves undefined), with a note
    saying so."""
    with open(path, "rb") as f:
        start = f.read(2)
    if encoding is None and start in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        encoding = "utf-16"
    if encoding is not None:
        codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") \
            else encoding
        try:
            codecs.lookup(codec)
        except LookupError:
            raise ValueError(f"load_csv: encoding: expected a codec name such as 'utf-8' or "
                             f"'cp1252'; got {encoding!r}") from None
        bad = _first_undecodable(path, codec)
        if bad is not None:
            raise ValueError(f"load_csv: {path!r} line {bad[1]}: byte 0x{bad[0]:02x} is not "
                             f"{encoding}; pass the file's encoding (encoding='cp1252' for "
                             f"Windows files; --encoding in the CLI) or save it as UTF-8")
        return codec, None
    bad = _first_undecodable(path, "utf-8-sig")
    if bad is None:
        return "utf-8-sig", None
    used = "cp1252" if _first_undecodable(path, "cp1252") is None else "latin-1"
    note = (f"{os.path.basename(path)} is not UTF-8 (byte 0x{bad[0]:02x} on line {bad[1]}): "
            f"read as {used}; encoding= (--encoding) names another")
    return used, note


def _number(cell, decimal_comma):
    return float(cell.replace(",", ".") if decimal_comma else cell)


def whole_as_int(y):
    """``y`` as int64 when every value is a finite whole number (targets written as 1.0,
    2.0, ...), else ``y`` itself."""
    if y.dtype.kind == "f" and numpy.isfinite(y).all() and numpy.array_equal(y, numpy.round(y)):
        return y.astype(numpy.int64)
    return y


# The first header cell pandas writes for its index (an unnamed index), and what it
# calls that column when such a file is read and written again.
_INDEX_NAMES = ("", "Unnamed: 0")


class CsvFile:
    """A CSV file as ``read_csv`` reads it, before its columns are chosen: the ``codec``
    that decodes it (see ``_encoding``) and the ``notes`` on it, the ``delimiter``
    (given, or detected from the first lines), whether it writes a ``decimal_comma``,
    the ``header`` (None: none), the ``width`` of its first data row (None: it has
    none) and the column ``names``. ``rows()`` reads the data rows from the file each
    time it is called, so that a file larger than memory is read in ``chunks``."""

    def __init__(self, path, delimiter=None, encoding=None):
        self.path = _check_file(path, "load_csv")
        self.codec, note = _encoding(self.path, encoding)
        self.notes = [note] if note else []
        with open(self.path, encoding=self.codec, newline="") as f:
            self.head = [line.rstrip("\r\n") for line in itertools.islice(f, _SNIFF_LINES)]
        self.delimiter = _detect_delimiter(self.head) if delimiter is None else delimiter
        self.decimal_comma = self.delimiter == ";"  # locales that write 1,5 use semicolons
        with contextlib.closing(self._records()) as records:
            first = list(itertools.islice(records, _SNIFF_LINES))
        self.header = None
        if first and _has_header([r for _, r in first], self.decimal_comma):
            self.header, first = [c.strip() for c in first[0][1]], first[1:]
        self.width = len(first[0][1]) if first else None
        self.names = self.header or [f"column {j}" for j in range(self.width or 0)]

    def _records(self):
        """``(line number, cells)`` of every non-empty row, the header's included."""
        with open(self.path, encoding=self.codec, newline="") as f:
            reader = csv.reader(f, delimiter=self.delimiter)
            for row in reader:
                if row:
                    yield reader.line_num, row

    def rows(self):
        """``(line number, cells)`` of every data row, read from the file as they are
        taken."""
        records = self._records()
        if self.header is not None:
            next(records, None)
        return records

    def chunks(self, size=CHUNK_ROWS):
        """The data rows, in lists of at most ``size``."""
        with contextlib.closing(self.rows()) as rows:
            while True:
                chunk = list(itertools.islice(rows, size))
                if not chunk:
                    return
                yield chunk

    def columns(self, target=-1, class_names=None, chunks=None):
        """The ``CsvColumns`` of ``target`` (as ``read_csv`` takes it): one pass over
        the data rows checks every row's width and every target, and looks for the
        index pandas writes. ``chunks()`` gives the rows in lists (by default
        ``self.chunks()``; a caller holding every row passes ``lambda: [rows]``)."""
        chunks = chunks or self.chunks
        self._check_width(target)
        col = _target_column(target, self.header, self.width)
        targets = None if col is None else _TargetScan(self, col)
        index = _IndexScan(self) if col != 0 and self.header is not None and \
            self.header[0] in _INDEX_NAMES and self.width >= 2 else None
        rows = 0
        for chunk in chunks():
            for line, row in chunk:
                if len(row) != self.width:
                    raise ValueError(f"load_csv: {self.path!r} line {line}: expected "
                                     f"{self.width} columns (as the first row); got {len(row)}")
            rows += len(chunk)
            for scan in (targets, index):
                if scan is not None:
                    scan.add(chunk)
        index_note = None if index is None else index.note()
        notes = self.notes + ([index_note] if index_note else [])
        features = [j for j in range(self.width) if j != col and not (j == 0 and index_note)]
        classes = None if targets is None else targets.class_names(class_names, chunks)
        return CsvColumns(self, rows, features, col, classes, notes)

    def _check_width(self, target):
        """Raise unless the file has data rows, and columns enough for ``target``."""
        if self.width is None:
            raise ValueError(f"load_csv: {self.path!r} " + (
                "is empty" if self.header is None else "has a header but no data rows"))
        chosen, other = self.delimiter, _detect_delimiter(self.head)
        if self.width < (1 if target is None else 2):
            hint = f"; the file looks {_delimiter_name(other)}-separated: pass delimiter=" \
                   f"{other!r} (--delimiter in the CLI)" if other != chosen else ""
            raise ValueError(f"load_csv: {self.path!r}: expected at least two columns "
                             f"(features and a target) separated by {_delimiter_name(chosen)}; "
                             f"got one{hint}")
        if target is None and self.width == 1 and other != chosen:
            raise ValueError(f"load_csv: {self.path!r}: one column separated by "
                             f"{_delimiter_name(chosen)}; the file looks "
                             f"{_delimiter_name(other)}-separated")


class _IndexScan:
    """The first column's values, chunk by chunk, while it may be the index pandas
    writes by default (unnamed, distinct whole numbers: a RangeIndex, or one shuffled or
    filtered)."""

    def __init__(self, csv_file):
        self.decimal_comma = csv_file.decimal_comma
        self.values = []  # an array per chunk so far; None once a cell is not a number

    def add(self, chunk):
        if self.values is not None:
            try:
                self.values.append(numpy.array([_number(r[0], self.decimal_comma)
                                                for _, r in chunk]))
            except ValueError:
                self.values = None

    def note(self):
        """The note saying that the column is left out, or None: it is a feature."""
        if not self.values:
            return None
        values = numpy.concatenate(self.values)
        if not (numpy.isfinite(values).all() and numpy.array_equal(values, numpy.round(values))
                and numpy.unique(values).size == values.size):
            return None
        return (f"the first column, unnamed and holding distinct whole numbers "
                f"({values.min():.0f}..{values.max():.0f}), is the index pandas writes: left "
                f"out of the features (to_csv(index=False) writes none)")


class _TargetScan:
    """A target column seen chunk by chunk: numbers while every cell is one (the first
    that is not finite kept for its error), else labels, each with the line it first
    appears on."""

    def __init__(self, csv_file, col):
        self.csv_file, self.col = csv_file, col
        self.seen = 0  # rows seen while the column looked numeric
        self.not_finite = None  # (line, cell)
        self.labels = None  # {label: first line}, once a cell is not a number
        self.relabel = False  # whether rows before the first label must be read again

    def add(self, chunk):
        col = self.col
        if self.labels is None:
            for i, (line, row) in enumerate(chunk):
                cell = row[col].strip()
                try:
                    value = _number(cell, self.csv_file.decimal_comma)
                except ValueError:
                    self.labels, self.relabel = {}, self.seen + i > 0
                    chunk = chunk[i:]
                    break
                if self.not_finite is None and not math.isfinite(value):
                    self.not_finite = (line, cell)
            else:
                self.seen += len(chunk)
                return
        for line, row in chunk:
            self.labels.setdefault(row[col].strip(), line)

    def class_names(self, given, chunks):
        """The class names in code order (None: the targets are numbers), once the
        column is checked: a number that is not finite, a missing label, or one not in
        ``given`` is an error naming its line. The names are ``given`` when given, else
        the labels sorted. ``chunks()``: the rows again, for the labels of the rows read
        while the column still looked numeric."""
        path, name = self.csv_file.path, self.csv_file.names[self.col]

        def where(line):
            return f"load_csv: {path!r} line {line}, column {name} (the target): expected"

        if self.labels is None:
            if self.not_finite is not None:
                line, cell = self.not_finite
                raise ValueError(f"{where(line)} a finite number; got {cell!r}")
            return None
        if self.relabel:
            self.labels, self.relabel = {}, False
            for chunk in chunks():
                self.add(chunk)
        labels = self.labels
        if "" in labels:
            raise ValueError(f"{where(labels[''])} a label; got a missing value")
        if given is None:
            return sorted(labels)
        given = [str(c) for c in given]
        known = set(given)
        unknown = [label for label in labels if label not in known]
        if unknown:
            label = min(unknown, key=labels.get)
            raise ValueError(f"{where(labels[label])} one of the classes {given}; got "
                             f"{label!r}")
        return given


class CsvColumns:
    """What one pass over a ``CsvFile``'s data rows settled (``CsvFile.columns``):
    ``rows``, the feature columns ``features`` (indices) and their ``feature_names``,
    the ``target`` column (None: a table of features only) and ``target_name``,
    ``class_names`` (the labels in code order when the target holds text, else None)
    and the ``notes``. ``parse(chunk)`` reads a chunk of the rows into arrays."""

    def __init__(self, csv_file, rows, features, target, class_names, notes):
        self.csv_file, self.rows = csv_file, rows
        self.features, self.target = features, target
        self.feature_names = [csv_file.names[j] for j in features]
        self.target_name = None if target is None else csv_file.names[target]
        self.class_names, self.notes = class_names, notes
        self._codes = None if class_names is None else {c: i for i, c in
                                                        enumerate(class_names)}

    def parse(self, chunk):
        """``(x, y)`` of a chunk of rows: the features as float64 (a cell that is not a
        finite number is an error naming its line and column), the targets as float64
        numbers or int64 codes (None without a target)."""
        f, col = self.csv_file, self.target
        x = _feature_matrix(f.path, chunk, self.features, f.names, f.decimal_comma)
        if col is None:
            return x, None
        if self._codes is not None:
            return x, numpy.array([self._codes[row[col].strip()] for _, row in chunk],
                                  dtype=numpy.int64)
        return x, numpy.array([_number(row[col].strip(), f.decimal_comma) for _, row in chunk],
                              dtype=numpy.float64)

    def targets(self, y):
        """The target column, from the ``y`` of every chunk laid end to end: numbers that
        are all whole as int64 (``whole_as_int``)."""
        return y if self._codes is not None else whole_as_int(y)


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

    The rules are ``CsvFile``'s and ``CsvColumns``': the command line reads a file too
    large for memory in chunks by them (``dnn.cli.streaming``), with the same results.
    """
    csv_file = CsvFile(path, delimiter, encoding)
    rows = list(csv_file.rows())
    columns = csv_file.columns(target, class_names, lambda: [rows])
    x, y = columns.parse(rows)
    return CsvTable(x, None if y is None else columns.targets(y), columns.feature_names,
                    columns.target_name, columns.class_names, csv_file.delimiter,
                    columns.notes)


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


def csv_columns(path, delimiter=None, encoding=None):
    """``(header names or None, number of columns)`` of a CSV file, as ``read_csv``
    sees them."""
    csv_file = CsvFile(path, delimiter, encoding)
    header = csv_file.header
    return header, len(header) if header is not None else (csv_file.width or 0)


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
