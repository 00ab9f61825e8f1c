"""The model file format: one .npz read with ``allow_pickle=False``, holding a JSON header
(with a format version), the weights and the optimizer state. This module knows the
format, not the model: ``dnn.model`` writes through it and ``dnn.saving`` reads.

Writes are atomic (``dnn.files.atomic_write``): a crash mid-write leaves the previous
file intact.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy

from .files import atomic_write

FORMAT = "dnn-model"
# 2: normalization layers, class_names in the config. 1 (dnn 0.1): Dense, Dropout and
# Activation only, the CLI's feature scaling in the metadata; still read (dnn.saving
# turns that scaling into a Normalization layer).
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class ModelFileError(ValueError):
    """A model file that cannot be read: truncated, tampered, or not a dnn model."""


def write(path, config, weights, compiled=None, optimizer_state=None, epochs_done=0,
          train_steps=0, metadata=None, what="save: path"):
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
    atomic_write(path, lambda f: numpy.savez(f, **arrays), what)


def read(path):
    """``(header, arrays)`` of a model file, checked against the format."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_model: path: no such file: {path!r}")
    not_a_model = f"load_model: {path!r} is not a dnn model file; expected a .npz written " \
                  f"by model.save or dnn train --save"
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise ModelFileError(f"{not_a_model} (this file is not a .npz archive)")
        f.seek(0)
        try:
            with numpy.load(f, allow_pickle=False) as data:
                if "header" not in data.files:
                    raise ModelFileError(f"{not_a_model} (it holds arrays "
                                         f"{sorted(data.files)[:8]} but no dnn header)")
                arrays = {name: data[name] for name in data.files}
        except ModelFileError:
            raise
        except ValueError as exc:
            if "pickle" in str(exc):  # numpy's message would advise allow_pickle=True
                raise ModelFileError(f"{not_a_model} (it holds Python objects, which dnn "
                                     f"never writes and does not load)") from None
            raise ModelFileError(f"{not_a_model} ({exc})") from None
        except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise ModelFileError(f"load_model: {path!r} is truncated or corrupted: "
                                 f"{exc}") from None
    if arrays["header"].dtype != numpy.uint8:
        raise ModelFileError(f"{not_a_model} (its 'header' is not a dnn header)")
    try:
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"load_model: {path!r}: the header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"load_model: {path!r}: expected format {FORMAT!r}; got "
                             f"{header.get('format') if isinstance(header, dict) else header!r}")
    version = header.get("format_version")
    if version not in READABLE_VERSIONS:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise ModelFileError(f"load_model: {path!r}: expected format_version "
                             f"{' or '.join(map(str, READABLE_VERSIONS))}; got {version!r}"
                             f"{' (written by a newer dnn: upgrade dnn)' if newer else ''}")
    if sorted(arrays) != sorted(header.get("arrays", [])):
        raise ModelFileError(f"load_model: {path!r}: expected arrays {header.get('arrays')}; "
                             f"got {sorted(arrays)}")
    return header, arrays
