"""Data at the API boundary: what ``fit``, ``evaluate`` and ``predict`` accept, checked,
and handed to the training loop as a source (``dnn.training.sources``).

Accepted:

- arrays: host data (NumPy arrays, lists), the backend's own arrays (CuPy on the cupy
  backend), and any array that exports DLPack (a CUDA or CPU ``torch.Tensor``, a JAX
  array), taken without a copy where it already lives on the model's device. An array
  on another device is an error that names both. Arrays are checked where they live,
  so device data never makes a host round trip: shapes from the metadata, then the
  values (every feature finite; targets finite and in the range the loss accepts) from
  a few reductions read back in one transfer. Host data is checked in one pass and
  uploaded once per call, and each batch is then gathered on the device (the fast
  path, ``ArraySource``);
- data streamed from the host instead (``HostArraySource``): a memory-mapped array
  (``numpy.memmap``, ``numpy.load(..., mmap_mode="r")``) on any backend; a host array
  larger than the device's free memory; ``Rows(x, rows)``, rows of either. Loader
  threads gather, cast and check each batch (naming the row of a bad value);
- batch sources: a Keras-style sequence (``__len__`` and ``__getitem__``, Keras 3's
  ``PyDataset``; a list of ``(x, y)`` batches is one), or an iterable of batches (a
  generator, a torch ``DataLoader``): ``(x, y)`` or ``(x, y, sample_weight)`` tuples,
  ``(x,)`` or ``x`` alone for predict. Their batches are checked one by one, as arrays
  are, and an error names the batch (``batch_reader``). ``y``, ``sample_weight``,
  ``batch_size`` and ``validation_split`` do not apply (the batches hold all of it);
  ``shuffle`` permutes a sequence's batches and leaves an iterable's order to it.
"""
from __future__ import annotations

import numpy

from . import checks
from .batch_reader import BatchReader
from .batch_sources import IterableSource, SequenceSource
from .host_source import HostArraySource, Rows, is_memmap
from .sources import ArraySource, on_device, step_specs

# A host data set larger than this fraction of the device's free memory is streamed
# (the rest is the model's: weights, optimizer state, each batch size's workspaces).
STREAM_FRACTION = 0.8


def kind_of(data):
    """``"array"``, ``"rows"``, ``"sequence"`` or ``"iterable"``: how ``data`` is read."""
    if isinstance(data, Rows):
        return "rows"
    if data is None or isinstance(data, (str, bytes, dict, numpy.ndarray)) or \
            hasattr(data, "__dlpack__") or hasattr(data, "__array__") or \
            hasattr(data, "__array_interface__") or hasattr(data, "__cuda_array_interface__"):
        return "array"
    if isinstance(data, (list, tuple)):
        return "sequence" if data and _is_batch(data[0]) else "array"
    if hasattr(data, "__getitem__") and (hasattr(data, "__len__") or
                                         hasattr(data, "num_batches")):
        return "sequence"
    if hasattr(data, "__iter__") or hasattr(data, "__next__"):
        return "iterable"
    return "array"


def _is_batch(item):
    """Whether a list's first item is a batch: a tuple of arrays (of at least one
    dimension: a row of numbers, NumPy scalars included, is data, not a batch)."""
    return isinstance(item, (tuple, list)) and 1 <= len(item) <= 3 and \
        (getattr(item[0], "ndim", 0) or 0) >= 1


def _refuse(name, value, why):
    raise ValueError(f"{name}: expected {why}; got {value!r}")


# ------------------------------------------------------------------ arrays, whole
def features(model, x, name="x"):
    """``x`` checked and on the model's device in the compute dtype (building the model
    from its width if needed)."""
    x, _ = checks.checked_features(model, x, name)
    return model.backend.asarray(x, dtype=model.compute_dtype)


def features_and_targets(model, x, y, name="x", sample_weight=None, class_weight=None):
    """``(x, y, w)`` checked and on the model's device: features in the compute dtype,
    targets in the layout and dtype the loss expects, and the per-sample weights from
    ``sample_weight`` and ``class_weight`` (their product, as Keras) or None."""
    x, y, w, _ = checks.checked_data(model, x, y, name, sample_weight,
                                     checks.class_weight_table(class_weight))
    arrays = (x, y) if w is None else (x, y, w)
    return on_device(model.backend, arrays, step_specs(model, x, y, w is not None)) + \
        (None,) * (w is None)


# ------------------------------------------------------------------ arrays, streamed
def _streams(model, x, name):
    """Whether host array ``x`` is streamed rather than uploaded whole: a memmap always
    (its rows are read as they are needed, and a dtype cast never copies it whole);
    another host array when it would not fit in the device's free memory."""
    if is_memmap(x):
        return True
    be = checks.model_backend(model)
    if be.is_native(x) or hasattr(x, "__dlpack__") and not isinstance(x, numpy.ndarray):
        return False
    free = be.free_memory()
    if free is None:
        return False
    arr = numpy.asarray(x) if not hasattr(x, "nbytes") else x
    itemsize = numpy.dtype(model.compute_dtype).itemsize if model.built else arr.itemsize
    return arr.size * itemsize > STREAM_FRACTION * free


def _host_features(model, x, name):
    if not is_memmap(x):
        x = checks.as_array(checks.model_backend(model), x, name)
    elif x.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numeric data (bool, int or float); got dtype "
                        f"{x.dtype}")
    return checks.shaped_features(model, x, name)


def host_source(model, x, y=None, name="x", sample_weight=None, class_weight=None):
    """A ``HostArraySource`` of host features ``x`` (an array, a memmap, or ``Rows``)
    and targets ``y`` (None for predict): shapes checked now, values batch by batch."""
    selection = None
    if isinstance(x, Rows):
        x, selection = x.x, x.rows
    x = _host_features(model, x, name)
    rows = x.shape[0] if selection is None else selection.shape[0]
    if y is None:
        return HostArraySource(model, x, selection=selection)
    y = y if is_memmap(y) else checks.as_array(model.backend, y, "y")
    if model.backend.is_native(y):
        y = model.backend.to_numpy(y)
    checks.matching_targets(y, rows, name)
    layout = model.loss.target_layout(y, model.output_dim)
    weights = None if sample_weight is None else checks.sample_weights(model, sample_weight,
                                                                       rows)
    return HostArraySource(model, x, layout, weights, selection,
                           checks.class_weight_table(class_weight))


# ------------------------------------------------------------------ batch sources
def batch_source(model, data, kind, steps=None, class_weight=None, with_targets=True):
    """A ``SequenceSource`` or ``IterableSource`` of ``data``; its first batch is read
    now (it sets the model's input width, and what every batch must hold)."""
    reader = BatchReader(model, with_targets, checks.class_weight_table(class_weight))
    if kind == "sequence":
        length = _sequence_length(data)
        if length is None and steps is None:
            raise ValueError("steps_per_epoch: expected the number of batches per epoch "
                             "for an endless sequence (num_batches None); got None")
        first = _first_read(reader, data, lambda: data[0])
        return SequenceSource(model, data, reader, first, steps, length)
    iterator = iter(data)
    try:
        first_batch = next(iterator)
    except StopIteration:
        raise ValueError(f"x: expected batches; the {type(data).__name__} gave none "
                         f"(an exhausted generator?)") from None
    first = _first_read(reader, data, lambda: first_batch)
    return IterableSource(model, data, reader, first, steps, iterator, first_batch)


def _sequence_length(data):
    """A sequence's number of batches: Keras 3's ``num_batches`` where the class has it
    (None: endless), else ``len``."""
    length = data.num_batches if hasattr(type(data), "num_batches") else len(data)
    if length is not None and (not isinstance(length, (int, numpy.integer)) or length < 1):
        raise ValueError(f"x: expected a sequence of at least one batch; got "
                         f"{type(data).__name__} of length {length!r}")
    return None if length is None else int(length)


def _first_read(reader, data, get):
    """The first batch read (in this thread), with a hint when a torch Dataset was
    passed where its DataLoader was meant."""
    try:
        return reader.read(get(), 0)
    except (TypeError, ValueError) as exc:
        if type(data).__module__.startswith("torch.utils.data"):
            raise type(exc)(f"{exc} (a torch Dataset gives samples, not batches: pass a "
                            f"torch.utils.data.DataLoader)") from None
        raise


# ------------------------------------------------------------------ the API calls
def training_sources(model, x, y, options, sample_weight=None, class_weight=None):
    """``(training source, validation source or None)`` for ``fit``; settles the
    options' batch sizes for array data."""
    kind = kind_of(x)
    if kind in ("sequence", "iterable"):
        _refuse_for_batches(y, sample_weight, options)
        train = batch_source(model, x, kind, options.steps_per_epoch, class_weight)
        return train, _validation(model, options, None)[1]
    if options.steps_per_epoch is not None:
        _refuse("steps_per_epoch", options.steps_per_epoch, "None for array data (an "
                "epoch is every row once; steps_per_epoch is for batch sources)")
    options.for_arrays()
    if y is None:
        raise ValueError("y: expected targets for x (or x as a batch source of (x, y) "
                         "batches); got None")
    if kind == "rows" or _streams(model, x, "x"):
        train = host_source(model, x, y, sample_weight=sample_weight,
                            class_weight=class_weight)
    else:
        train = ArraySource(*features_and_targets(model, x, y, sample_weight=sample_weight,
                                                  class_weight=class_weight))
    return _validation(model, options, train)


def _refuse_for_batches(y, sample_weight, options):
    why = "when x is a batch source"
    if y is not None:
        _refuse("y", type(y).__name__, f"None {why} (its batches carry the targets)")
    if sample_weight is not None:
        _refuse("sample_weight", type(sample_weight).__name__,
                f"None {why} (yield (x, y, sample_weight) batches)")
    if options.batch_size is not None:
        _refuse("batch_size", options.batch_size, f"None {why} (its batches set their size)")
    if options.validation_split:
        _refuse("validation_split", options.validation_split,
                f"0 {why} (pass validation_data)")


def _validation(model, options, train):
    """``(train, validation)``: after ``validation_data`` ((x, y), (x, y,
    sample_weight), or a batch source) or ``validation_split`` (as Keras: the last
    fraction of the data, before any shuffling; the split is views)."""
    data = options.validation_data
    if data is not None:
        return train, validation_source(model, data, options)
    if not options.validation_split:
        return train, None
    split = int(round(train.rows * (1 - options.validation_split)))
    if split <= 0 or split >= train.rows:
        raise ValueError(f"validation_split: {options.validation_split} leaves an empty "
                         f"training or validation set for {train.rows} samples")
    return train.split(split)


def validation_source(model, data, options):
    if isinstance(data, (tuple, list)) and len(data) in (2, 3) and \
            kind_of(data[0]) in ("array", "rows") and not _is_batch(data[0]):
        weights = (data[2:] or [None])[0]
        if options.validation_batch_size is None:  # a batch source trains: as Keras, 32
            options.validation_batch_size = 32
        if kind_of(data[0]) == "rows" or _streams(model, data[0], "validation_data"):
            return host_source(model, data[0], data[1], "validation_data", weights)
        return ArraySource(*features_and_targets(model, *data[:2], name="validation_data",
                                                 sample_weight=weights))
    kind = kind_of(data)
    if kind not in ("sequence", "iterable"):
        raise ValueError("validation_data: expected a tuple (x_val, y_val) or (x_val, "
                         f"y_val, sample_weight), or a batch source; got "
                         f"{type(data).__name__}")
    if options.validation_batch_size is not None and options.batch_size is None:
        _refuse("validation_batch_size", options.validation_batch_size,
                "None when validation_data is a batch source (its batches set their size)")
    return batch_source(model, data, kind, options.validation_steps)


def evaluation_source(model, x, y, batch_size, sample_weight=None, steps=None):
    """``(source, batch size)`` of ``evaluate``: batch size 256 for arrays by default."""
    kind = kind_of(x)
    if kind in ("sequence", "iterable"):
        for name, value in (("y", y), ("sample_weight", sample_weight),
                            ("batch_size", batch_size)):
            if value is not None:
                _refuse(name, value if name == "batch_size" else type(value).__name__,
                        "None when x is a batch source (its batches hold the data)")
        return batch_source(model, x, kind, steps), None
    batch_size = 256 if batch_size is None else batch_size
    if kind == "rows" or _streams(model, x, "x"):
        return host_source(model, x, y, sample_weight=sample_weight), batch_size
    return ArraySource(*features_and_targets(model, x, y, sample_weight=sample_weight)), \
        batch_size


def prediction_source(model, x, batch_size, steps=None):
    """``(source, batch size)`` of ``predict``, or ``(None, batch size)`` for arrays that
    take the direct path (``features``)."""
    kind = kind_of(x)
    if kind in ("sequence", "iterable"):
        if batch_size is not None:
            _refuse("batch_size", batch_size, "None when x is a batch source (its batches "
                    "set their size)")
        return batch_source(model, x, kind, steps, with_targets=False), None
    batch_size = 256 if batch_size is None else batch_size
    if kind == "rows" or _streams(model, x, "x"):
        return host_source(model, x), batch_size
    return None, batch_size
