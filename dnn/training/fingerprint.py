"""A data set's fingerprint: what data-parallel ranks compare to know that they were given
the same data, not only the same number of rows (equal-sized shards would otherwise
train silently as one data set).

Cheap by design, computed where the data lives: for device arrays, each array's sum
(one reduction on the device) and a strided sample of at most ``SAMPLE_ROWS`` rows read
back, hashed together; for host arrays and memory-mapped files (which may be larger
than memory, so are never read whole), the strided sample alone. Two data sets that
differ anywhere change the sums; the sample catches what sums miss (rows swapped
between shards of one file keep the sums of the whole but not the sample).
"""
from __future__ import annotations

import hashlib

import numpy

SAMPLE_ROWS = 256


def sample_rows(rows):
    """The rows sampled from ``rows``: evenly strided, the first and the last included."""
    return numpy.unique(numpy.linspace(0, max(rows - 1, 0), min(rows, SAMPLE_ROWS))
                        .astype(numpy.int64))


def _digest(parts):
    """A signed 64-bit integer from byte strings, for ``Replica.check_same``."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part)
    return int.from_bytes(h.digest(), "little", signed=True)


def _header(arr):
    return f"{tuple(arr.shape)} {arr.dtype}".encode()


def device_fingerprint(backend, arrays, names):
    """``{"fingerprint of <name>": int}`` of each of ``arrays`` (the backend's, the same
    rows each), named by ``names`` in order."""
    index = backend.asarray(sample_rows(int(arrays[0].shape[0])))
    sums = backend.read_scalars([backend.sum(a) for a in arrays])
    result = {}
    for arr, name, total in zip(arrays, names, sums):
        sample = numpy.ascontiguousarray(backend.to_numpy(backend.take_rows(arr, index)))
        result[f"fingerprint of {name}"] = _digest(
            [_header(arr), numpy.float64(total).tobytes(), sample.tobytes()])
    return result


def host_fingerprint(arrays, names, selection=None):
    """The same for host arrays (memory-mapped or not), from the sample alone:
    ``arrays[0]`` the features (of which ``selection``, when given, names the rows
    that make the data set), then arrays of one entry per row of the data set (the
    targets, the weights; None where absent)."""
    rows = int(arrays[0].shape[0] if selection is None else selection.shape[0])
    index = sample_rows(rows)
    result = {}
    for i, (arr, name) in enumerate(zip(arrays, names)):
        if arr is None:
            continue
        rows_of = selection[index] if i == 0 and selection is not None else index
        sample = numpy.ascontiguousarray(numpy.take(arr, rows_of, axis=0))
        result[f"fingerprint of {name}"] = _digest([_header(arr), sample.tobytes()])
    return result


def batch_fingerprint(sums, rows):
    """An integer of a batch's checked sums and rows, which ranks holding the same
    batches agree on (``batch_reader`` reads the sums while checking the values)."""
    return _digest([numpy.asarray(sums, numpy.float64).tobytes(),
                    numpy.int64(rows).tobytes()])
