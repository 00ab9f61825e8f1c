"""The model file format: one .npz read with ``allow_pickle=False``, holding a JSON header
(with a format version), the weights and the optimizer state. This module knows the
format, not the model: ``dnn.model`` writes through it and ``dnn.saving`` reads.

Writes are atomic: a temporary file in the target's directory, fsync, then
``os.replace``, so a crash mid-write leaves the previous file intact.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy

FORMAT = "dnn-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be read: truncated, tampered, or not a dnn model."""


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temp file beside ``path``, then move it into place."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def write(path, config, weights, compiled=None, optimizer_state=None, epochs_done=0,
          train_steps=0, metadata=None):
    """Write a model file atomically. ``weights``: host arrays in get_weights order;
    ``compiled``: the loss, optimizer and metric configs, or None; ``optimizer_state``:
    ``{name: host array}``."""
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config,
              "epochs_done": epochs_done, "train_steps": train_steps, "compile": compiled,
              "metadata": metadata or {}}
    arrays = {f"weight_{i}": w for i, w in enumerate(weights)}
    if compiled is not None:
        arrays.update({f"optimizer_{name}": v for name, v in (optimizer_state or {}).items()})
    header["arrays"] = sorted(arrays)
    arrays["header"] = numpy.frombuffer(json.dumps(header).encode("utf-8"), dtype=numpy.uint8)
    atomic_write(path, lambda f: numpy.savez(f, **arrays))


def read(path):
    """``(header, arrays)`` of a model file, checked against the format."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_model: path: no such file: {path!r}")
    try:
        with numpy.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(f"load_model: {path!r} is not a readable dnn model file "
                             f"(truncated, corrupted, or holding pickled objects): {exc}") from exc
    if "header" not in arrays or arrays["header"].dtype != numpy.uint8:
        raise ModelFileError(f"load_model: {path!r} has no dnn header; expected a file "
                             f"written by model.save")
    try:
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"load_model: {path!r}: the header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"load_model: {path!r}: expected format {FORMAT!r}; got "
                             f"{header.get('format') if isinstance(header, dict) else header!r}")
    if header.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"load_model: {path!r}: expected format_version {FORMAT_VERSION}; "
                             f"got {header.get('format_version')!r}")
    if sorted(arrays) != sorted(header.get("arrays", [])):
        raise ModelFileError(f"load_model: {path!r}: expected arrays {header.get('arrays')}; "
                             f"got {sorted(arrays)}")
    return header, arrays
