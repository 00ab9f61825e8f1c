"""``save_model`` and ``load_model``, side by side (as Keras' ``saving_lib``): a model to
its file and back (``dnn.saving.model_file`` is the format). ``Sequential.save``
delegates here.

A model class makes itself loadable with ``@register_model`` (Keras registers its
serializable classes the same way), so this module does not import the model.
"""
from __future__ import annotations

import os

import numpy

from ..layers import layer_from_config
from .model_file import ModelFileError, describe, is_file_object, read, write

__all__ = ["ModelFileError", "check_saveable", "is_keras_path", "load_model",
           "register_model", "save_model"]

MODEL_CLASSES = {}


def register_model(cls):
    """Class decorator: ``load_model`` rebuilds files whose config names ``cls``."""
    MODEL_CLASSES[cls.__name__] = cls
    return cls


def is_keras_path(target):
    """Whether ``save_model`` writes a Keras archive to ``target``: a path ending in
    ".keras", in any case (as the suffix checks of ``dnn.utils.files`` read it)."""
    return not is_file_object(target) and os.fspath(target).lower().endswith(".keras")


def check_saveable(model, target, what="save"):
    """Raise now what ``save_model(model, target)`` would raise after training for the
    model itself: for a .keras path, h5py missing (ImportError) or a layer or activation
    that a Keras archive cannot hold (``KerasExportError``). Reads no weight. Where the
    file goes is checked by ``dnn.utils.files.check_output_path``."""
    if is_keras_path(target):
        from .keras_archive import check_expressible, require_h5py

        require_h5py(what)
        check_expressible(model, what)


def save_model(model, target):
    """Write ``model`` (built; compiled or not) to ``target``: a path (.npz, written
    atomically) or a binary file object. A path ending in ".keras" (any case) gets a
    Keras 3 archive instead (``dnn.saving.keras_archive``: architecture and weights,
    which ``keras.saving.load_model`` opens). Data-parallel: call it on every rank; rank 0
    writes, and every rank returns once the file is there, or raises if rank 0 could
    not write it."""
    what = "save: path"
    if is_keras_path(target):
        from .keras_archive import save_keras  # h5py, the keras extra, on use

        model.replica.on_chief(lambda: save_keras(model, target),
                               f"save: rank 0 could not write {describe(target)}")
        return
    compiled = None
    if model.loss is not None:
        compiled = {"loss": model.loss.get_config(), "optimizer": model.optimizer.get_config(),
                    "metrics": [m.get_config() for m in model.metrics if not m.weighted],
                    "weighted_metrics": [m.get_config() for m in model.metrics if m.weighted],
                    "steps_per_execution": model.steps_per_execution}
    header = {"config": model.get_config(), "epochs_done": model.epochs_done,
              "train_steps": model.train_steps, "compile": compiled,
              "metadata": model.metadata or {}}
    state = None if compiled is None else model.optimizer.get_state()
    # Read everything on every rank (device reads are collective-free), write on one.
    weights = model.get_weights()
    model.replica.on_chief(lambda: write(target, header, weights, state, what),
                           f"save: rank 0 could not write {describe(target)}")


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


# What the activation names meant in files before format 3: gelu was the tanh form, and
# leaky_relu had PyTorch's slope.
_OLD_ACTIVATIONS = {"gelu": {"name": "gelu", "approximate": True},
                    "leaky_relu": {"name": "leaky_relu", "negative_slope": 0.01}}


def _old_activations(layer_configs):
    """Layer configs of format 1 or 2 with their activations spelled as format 3 reads
    them, so that an old model computes what it was trained to compute."""
    out = []
    for config in layer_configs:
        config = dict(config)
        activation = config.get("activation")
        if isinstance(activation, str) and activation in _OLD_ACTIVATIONS:
            config["activation"] = dict(_OLD_ACTIVATIONS[activation])
        out.append(config)
    return out


def load_model(source, distribute=None):
    """Rebuild a saved model on the current backend, compiled, with its optimizer state.
    ``source``: a path, or a binary file object holding a model's bytes. Files of format
    1 and 2 load too, and compute as they did (see ``dnn.saving.model_file``).
    ``distribute``: a ``dnn.distributed.DataParallel`` to resume data-parallel training
    with (the file is read on every rank)."""
    if is_file_object(source) and hasattr(source, "seek"):
        source.seek(0)
    header, arrays = read(source)
    try:
        model = _rebuild(header, arrays)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"load_model: {describe(source)}: the file does not describe "
                             f"a valid model: {exc}") from exc
    if distribute is not None:
        if model.loss is None:
            raise ValueError(f"load_model: distribute: expected a file of a compiled model; "
                             f"{describe(source)} holds an uncompiled one (compile it with "
                             f"distribute= instead)")
        model.distribute_with(distribute)
    return model


def _rebuild(header, arrays):
    config = header["config"]
    n_weights = sum(1 for k in arrays if k.startswith("weight_"))
    weights = [arrays[f"weight_{i}"] for i in range(n_weights)]
    if header["format_version"] == 1:
        weights = _scaling_as_a_layer(header, weights)
    if header["format_version"] < 3:
        config["layers"] = _old_activations(config["layers"])
    cls = MODEL_CLASSES[config.get("class_name", "Sequential")]
    model = cls([layer_from_config(c) for c in config["layers"]],
                input_dim=config["input_dim"], seed=config["seed"], dtype=config["dtype"],
                name=config.get("name", "sequential"))
    model.build()
    model.set_weights(weights)
    model.class_names = config.get("class_names")
    compiled = header.get("compile")
    if compiled:
        model.compile(loss=compiled["loss"], optimizer=compiled["optimizer"],
                      metrics=compiled["metrics"],
                      steps_per_execution=compiled.get("steps_per_execution", 1),
                      weighted_metrics=compiled.get("weighted_metrics"))
        prefix = "optimizer_"
        model.optimizer.set_state({k[len(prefix):]: v for k, v in arrays.items()
                                   if k.startswith(prefix)})
    model.epochs_done = int(header.get("epochs_done", 0))
    model.train_steps = int(header.get("train_steps", 0))
    model.metadata = dict(header.get("metadata") or {})
    return model
