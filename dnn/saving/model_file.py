"""The model file format: one .npz read with ``allow_pickle=False``, holding a JSON header
(with a format version), the weights and the optimizer state. This module knows the
format, not the model: ``dnn.saving.saving_lib`` turns models into it and back.

A file is a path, written atomically (``dnn.utils.files.atomic_write``: a crash
mid-write leaves the previous file intact), or a binary file object (``io.BytesIO``:
the model's bytes, as scikit-learn's pickling carries them).
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy

from ..utils.files import atomic_write

FORMAT = "dnn-model"
# 3: activations as Keras computes them ("gelu" the exact erf form, "leaky_relu" slope
# 0.2, options in a dict: {"name": "leaky_relu", "negative_slope": 0.1}), and optimizer
# configs that name their formulas. 2: normalization layers, class_names in the config.
# 1 (dnn 0.1): Dense, Dropout and Activation only, the CLI's feature scaling in the
# metadata. 1 and 2 are still read: saving_lib turns their "gelu" into the tanh form and
# their "leaky_relu" into slope 0.01, as they were trained, and format 1's scaling into a
# Normalization layer.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


class ModelFileError(ValueError):
    """A model file that cannot be read: truncated, tampered, or not a dnn model."""


def is_file_object(target):
    """Whether ``target`` is an open binary file rather than a path."""
    return hasattr(target, "read") or hasattr(target, "write")


def write(target, header, weights, optimizer_state=None, what="save: path"):
    """Write a model file: ``header`` (JSON-serialisable, without the format fields),
    the host ``weights`` in get_weights order, and ``{name: host array}`` of optimizer
    state. ``target``: a path (written atomically) or a binary file object."""
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, **header}
    arrays = {f"weight_{i}": w for i, w in enumerate(weights)}
    arrays.update({f"optimizer_{name}": v for name, v in (optimizer_state or {}).items()})
    header["arrays"] = sorted(arrays)
    arrays["header"] = numpy.frombuffer(json.dumps(header).encode("utf-8"), dtype=numpy.uint8)
    if is_file_object(target):
        numpy.savez(target, **arrays)
    else:
        atomic_write(target, lambda f: numpy.savez(f, **arrays), what)


def describe(source):
    """How errors name a file: its path, or "the model bytes" for a file object."""
    return "the model bytes" if is_file_object(source) else repr(os.fspath(source))


def read(source):
    """``(header, arrays)`` of a model file (a path or a binary file object), checked
    against the format."""
    name = describe(source)
    if is_file_object(source):
        arrays = _read_arrays(source, name)
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"load_model: path: no such file: {path!r}")
        with open(path, "rb") as f:
            arrays = _read_arrays(f, name)
    header = _header(arrays, name)
    if sorted(arrays) != sorted(header.get("arrays", [])):
        raise ModelFileError(f"load_model: {name}: expected arrays {header.get('arrays')}; "
                             f"got {sorted(arrays)}")
    return header, arrays


def _not_a_model(name):
    return (f"load_model: {name} is not a dnn model file; expected a .npz written by "
            f"model.save or dnn train --save")


def _read_arrays(f, name):
    """Every array of an open .npz, with the header still among them."""
    if f.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
        raise ModelFileError(f"{_not_a_model(name)} (this file is not a .npz archive)")
    f.seek(0)
    try:
        with numpy.load(f, allow_pickle=False) as data:
            if "header" not in data.files:
                if {"config.json", "model.weights.h5"} <= set(data.files):
                    raise ModelFileError(f"{_not_a_model(name)} (it is a Keras archive: "
                                         f"open it with keras.saving.load_model)")
                raise ModelFileError(f"{_not_a_model(name)} (it holds arrays "
                                     f"{sorted(data.files)[:8]} but no dnn header)")
            return {key: data[key] for key in data.files}
    except ModelFileError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):  # numpy's message would advise allow_pickle=True
            raise ModelFileError(f"{_not_a_model(name)} (it holds Python objects, which "
                                 f"dnn never writes and does not load)") from None
        raise ModelFileError(f"{_not_a_model(name)} ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(f"load_model: {name} is truncated or corrupted: "
                             f"{exc}") from None


def _header(arrays, name):
    """The decoded header, popped from ``arrays``, with a readable format version."""
    if arrays["header"].dtype != numpy.uint8:
        raise ModelFileError(f"{_not_a_model(name)} (its 'header' is not a dnn header)")
    try:
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"load_model: {name}: the header is not valid JSON: "
                             f"{exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"load_model: {name}: expected format {FORMAT!r}; got "
                             f"{header.get('format') if isinstance(header, dict) else header!r}")
    version = header.get("format_version")
    if version not in READABLE_VERSIONS:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise ModelFileError(f"load_model: {name}: expected format_version "
                             f"{' or '.join(map(str, READABLE_VERSIONS))}; got {version!r}"
                             f"{' (written by a newer dnn: upgrade dnn)' if newer else ''}")
    return header
