"""Model files: one .npz read with ``allow_pickle=False``, holding a JSON header (with a
format version), the weights and the optimizer state.

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


def save_model(model, path):
    model._require_built("save")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.get_config(),
        "epochs_done": model.epochs_done,
        "train_steps": model.train_steps,
        "compile": None,
        "metadata": model.metadata,
    }
    arrays = {}
    for i, w in enumerate(model.get_weights()):
        arrays[f"weight_{i}"] = w
    if model.loss is not None:
        header["compile"] = {
            "loss": model.loss.get_config(),
            "optimizer": model.optimizer.get_config(),
            "metrics": [m.name for m in model.metrics],
        }
        for name, value in model.optimizer.get_state().items():
            arrays[f"optimizer_{name}"] = value
    header["arrays"] = sorted(arrays)
    arrays["header"] = numpy.frombuffer(json.dumps(header).encode("utf-8"), dtype=numpy.uint8)
    atomic_write(path, lambda f: numpy.savez(f, **arrays))


def _read(path):
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


def load_model(path):
    """Rebuild a saved model on the current backend, compiled, with its optimizer state."""
    from .layers import layer_from_config
    from .model import Sequential

    header, arrays = _read(path)
    try:
        config = header["config"]
        model = Sequential([layer_from_config(c) for c in config["layers"]],
                           input_dim=config["input_dim"], seed=config["seed"],
                           dtype=config["dtype"], name=config.get("name", "sequential"))
        model.build()
        n_weights = sum(1 for k in arrays if k.startswith("weight_"))
        model.set_weights([arrays[f"weight_{i}"] for i in range(n_weights)])
        compiled = header.get("compile")
        if compiled:
            model.compile(loss=compiled["loss"], optimizer=compiled["optimizer"],
                          metrics=compiled["metrics"])
            prefix = "optimizer_"
            model.optimizer.set_state({k[len(prefix):]: v for k, v in arrays.items()
                                       if k.startswith(prefix)})
        model.epochs_done = int(header.get("epochs_done", 0))
        model.train_steps = int(header.get("train_steps", 0))
        model.metadata = dict(header.get("metadata") or {})
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"load_model: {os.fspath(path)!r}: the file does not describe a "
                             f"valid model: {exc}") from exc
    return model
