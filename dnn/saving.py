"""``load_model``: rebuild a model from its file (see ``dnn.model_file`` for the format)."""
from __future__ import annotations

import os

import numpy

from .layers import layer_from_config
from .model import Sequential
from .model_file import ModelFileError, read

__all__ = ["ModelFileError", "load_model"]


def _scaling_as_a_layer(header, weights):
    """Format 1 kept the CLI's feature scaling in the metadata, where Python's predict
    never saw it: make it the model's first layer, a Normalization with the same mean
    and variance (it holds no trainable weights, so the optimizer state still fits)."""
    scaling = (header.get("metadata") or {}).pop("standardizer", None)
    if scaling is None:
        return weights
    header["config"]["layers"].insert(0, {"class_name": "Normalization", "name": None})
    mean = numpy.asarray(scaling["mean"], numpy.float64)
    variance = numpy.asarray(scaling["scale"], numpy.float64) ** 2
    return [mean, variance] + weights


def load_model(path, distribute=None):
    """Rebuild a saved model on the current backend, compiled, with its optimizer state.
    Files of format 1 load too (see ``dnn.model_file``). ``distribute``: a
    ``dnn.distributed.DataParallel`` to resume data-parallel training with (the file
    is read on every rank)."""
    header, arrays = read(path)
    try:
        config = header["config"]
        n_weights = sum(1 for k in arrays if k.startswith("weight_"))
        weights = [arrays[f"weight_{i}"] for i in range(n_weights)]
        if header["format_version"] == 1:
            weights = _scaling_as_a_layer(header, weights)
        model = Sequential([layer_from_config(c) for c in config["layers"]],
                           input_dim=config["input_dim"], seed=config["seed"],
                           dtype=config["dtype"], name=config.get("name", "sequential"))
        model.build()
        model.set_weights(weights)
        model.class_names = config.get("class_names")
        compiled = header.get("compile")
        if compiled:
            model.compile(loss=compiled["loss"], optimizer=compiled["optimizer"],
                          metrics=compiled["metrics"],
                          steps_per_execution=compiled.get("steps_per_execution", 1))
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
    if distribute is not None:
        if model.loss is None:
            raise ValueError(f"load_model: distribute: expected a file of a compiled model; "
                             f"{os.fspath(path)!r} holds an uncompiled one (compile it with "
                             f"distribute= instead)")
        model.distribute_with(distribute)
    return model
