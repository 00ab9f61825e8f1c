"""Data too large to hold in memory, for the command line: read without loading it,
and trained on by streaming (``dnn.training.host_source``).

- A ``.npy`` file is opened as a memmap; one larger than ``stream_bytes()`` stays one
  (a smaller one is loaded, as before). Its target is a column (the last, or
  ``--target N``), or ``--target labels.npy``, a file of one target per row.
- A CSV file larger than ``stream_bytes()`` is read in chunks of rows into a cache
  beside it, ``<file>.dnn-cache.npy`` (the features, float64, as a memmap) and
  ``<file>.dnn-cache.y.npy`` (the targets), with ``<file>.dnn-cache.json`` (the names,
  the delimiter, the notes, and the size and modification time of the CSV and the
  options they were made from); a later run with the same CSV and options reuses them.
  It is read by ``read_csv``'s own rules (``dnn.data.io.CsvFile``: the encoding, the
  delimiter, the header, the index pandas writes, text labels), so it gives the
  features, names, notes and errors that reading it whole gives. The cache is written
  atomically (the JSON last), and where the CSV's folder cannot be written the CSV is
  read whole instead.

A streamed data set is split by rows (``split``: the same split as in memory, held as
``Rows`` of the file), and the Normalization layer adapts to its training rows'
mean and variance computed in chunks (``adapt_data``).
"""
from __future__ import annotations

import json
import os

import numpy

from ..data import io as csv_io
from ..data import train_test_split
from ..training import Rows
from ..utils.files import atomic_write
from .errors import UsageError

STREAM_MB = 256  # files larger than this are streamed (DNN_STREAM_MB overrides it)
CHUNK_ROWS = csv_io.CHUNK_ROWS  # rows parsed, or summed, at a time
CACHE_VERSION = 2
CACHE_SUFFIX = ".dnn-cache.npy"  # beside the CSV: its features


def stream_bytes():
    """The size above which the command line streams a file rather than loading it."""
    text = os.environ.get("DNN_STREAM_MB", "")
    try:
        megabytes = float(text) if text else STREAM_MB
    except ValueError:
        raise UsageError(f"DNN_STREAM_MB: expected a number of megabytes; got {text!r}") \
            from None
    return int(megabytes * 2**20)


def is_streamed(x):
    return isinstance(x, (numpy.memmap, Rows))


# ------------------------------------------------------------------------ .npy
def load_npy(path, target):
    """``(x, y, target name)`` of a .npy file: see the module docstring."""
    big = os.path.getsize(path) > stream_bytes()
    try:
        table = numpy.load(path, mmap_mode="r" if big else None, allow_pickle=False)
    except ValueError as exc:
        raise UsageError(f"data: {path!r}: expected a numeric .npy array; {exc}") from None
    if table.ndim != 2 or table.dtype.kind not in "biuf":
        raise UsageError(f"data: {path!r}: expected a 2-D numeric array (samples, columns); "
                         f"got {table.dtype} of shape {table.shape}")
    if target is not None and str(target).lower().endswith(".npy"):
        y = numpy.load(target, allow_pickle=False)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.shape[0] != table.shape[0]:
            raise UsageError(f"--target: expected {table.shape[0]} targets, one per row of "
                             f"{path!r}; got {y.shape[0]} in {target!r}")
        return table, y, os.path.basename(target)
    if table.shape[1] < 2:
        raise UsageError(f"data: {path!r}: expected at least two columns (features, then a "
                         f"target), or --target labels.npy; got {table.shape[1]}")
    try:
        col = int(-1 if target is None else target) % table.shape[1]
    except ValueError:
        raise UsageError(f"--target: expected a column position or a .npy file of targets "
                         f"for {path!r}; got {target!r}") from None
    features = numpy.delete(numpy.arange(table.shape[1]), col)
    contiguous = features.size == 0 or numpy.array_equal(features, numpy.arange(
        features[0], features[0] + features.size))
    # A run of columns is a view of the memmap; other choices would copy it whole.
    x = table[:, features[0]:features[-1] + 1] if contiguous else table[:, features]
    y = numpy.array(table[:, col])
    return x, csv_io.whole_as_int(y), f"column {col}"


# ------------------------------------------------------------------------ CSV
def load_large_csv(path, target, reading, class_names=None):
    """The ``CsvTable`` of a CSV larger than ``stream_bytes()``, its ``x`` a memmap of
    the cache; None when the CSV is small or its folder cannot hold a cache (read it
    whole then). ``target`` and ``class_names`` as ``read_csv``'s (target None: a table
    of features only); ``reading``: the ``Reading`` (delimiter, encoding) of the
    command line."""
    if os.path.getsize(path) <= stream_bytes():
        return None
    cache, meta_path = path + CACHE_SUFFIX, path + ".dnn-cache.json"
    delimiter = reading.csv_delimiter(path)
    key = _cache_key(path, target, delimiter, reading.encoding, class_names)
    meta = _read_meta(meta_path)
    if meta is None or meta.get("key") != key:
        if not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
            return None
        meta = _build_cache(path, cache, csv_io.CsvFile(path, delimiter, reading.encoding),
                            target, class_names)
        meta["key"] = key
        atomic_write(meta_path, lambda f: f.write(json.dumps(meta).encode()), "data cache")
    x = numpy.load(cache, mmap_mode="r")
    y = None if meta["target"] is None else numpy.load(path + ".dnn-cache.y.npy")
    return csv_io.CsvTable(x, y, meta["features"], meta["target"], meta["classes"],
                           meta["delimiter"], meta["notes"])


def _cache_key(path, target, delimiter, encoding, class_names):
    stat = os.stat(path)
    return [CACHE_VERSION, stat.st_size, stat.st_mtime_ns, target, delimiter, encoding,
            class_names]


def _read_meta(meta_path):
    try:
        with open(meta_path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _build_cache(path, cache, csv_file, target, class_names):
    """Read ``csv_file`` by ``read_csv``'s rules (``CsvFile.columns``: a first pass
    that checks the rows and settles the columns), then parse its rows in chunks into a
    .npy memmap; returns the metadata."""
    columns = csv_file.columns(target, class_names, lambda: csv_file.chunks(CHUNK_ROWS))
    tmp = f"{cache}.{os.getpid()}.tmp"
    x = numpy.lib.format.open_memmap(tmp, mode="w+", dtype=numpy.float64,
                                     shape=(columns.rows, len(columns.features)))
    y = numpy.empty(columns.rows, numpy.float64 if columns.class_names is None
                    else numpy.int64)
    done = 0
    try:
        for chunk in csv_file.chunks(CHUNK_ROWS):
            xs, ys = columns.parse(chunk)
            x[done:done + len(chunk)] = xs
            if ys is not None:
                y[done:done + len(chunk)] = ys
            done += len(chunk)
        x.flush()
        del x
        os.replace(tmp, cache)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if columns.target is not None:
        y = columns.targets(y)
        atomic_write(cache[:-len(".npy")] + ".y.npy", lambda f: numpy.save(f, y), "data cache")
    return {"features": columns.feature_names, "target": columns.target_name,
            "classes": columns.class_names, "delimiter": csv_file.delimiter,
            "notes": columns.notes}


# ------------------------------------------------------------------ training on it
def split(x, y, test_split, seed, stratify):
    """``(x_train, x_test, y_train, y_test)``: ``train_test_split``'s, for a streamed
    ``x`` as ``Rows`` of it (the same rows it would choose; each part in file order)."""
    if not is_streamed(x):
        return train_test_split(x, y, test_size=test_split, seed=seed, stratify=stratify)
    index = numpy.arange(x.shape[0])[:, None]
    i_train, i_test, y_train, y_test = train_test_split(index, y, test_size=test_split,
                                                        seed=seed, stratify=stratify)
    parts = []
    for rows, targets in ((i_train[:, 0], y_train), (i_test[:, 0], y_test)):
        order = numpy.argsort(rows)
        parts.append((Rows(x, rows), targets[order]))
    return parts[0][0], parts[1][0], parts[0][1], parts[1][1]


def adapt_data(x):
    """What ``Normalization.adapt`` is given: ``x`` itself when it is in memory; for
    streamed rows, two rows whose mean and variance are those rows' (computed in
    chunks, float64), since adapt reads its argument whole."""
    if not is_streamed(x):
        return x
    data, rows = (x.x, x.rows) if isinstance(x, Rows) else (x, numpy.arange(x.shape[0]))
    n, squares = 0, 0.0
    mean = numpy.zeros(data.shape[1])
    for start in range(0, rows.shape[0], CHUNK_ROWS):
        chunk = numpy.asarray(data[rows[start:start + CHUNK_ROWS]], numpy.float64)
        if not numpy.isfinite(chunk).all():
            raise UsageError("data: expected finite values in every feature; the file has "
                             "NaN or infinite ones")
        # Chan et al.'s pairwise update of the mean and the sum of squared deviations.
        m, k = chunk.mean(axis=0), chunk.shape[0]
        delta = m - mean
        squares = squares + ((chunk - m) ** 2).sum(axis=0) + delta ** 2 * n * k / (n + k)
        mean = mean + delta * k / (n + k)
        n += k
    std = numpy.sqrt(squares / n)
    return numpy.stack([mean - std, mean + std])
