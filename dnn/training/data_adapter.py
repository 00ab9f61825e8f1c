"""Data at the API boundary: what ``fit``, ``evaluate`` and ``predict`` accept, checked
once, and handed to the training loop as arrays on the model's device.

Accepted: host data (NumPy arrays, lists), the backend's own arrays (CuPy on the cupy
backend), and any array that exports DLPack (a CUDA or CPU ``torch.Tensor``, a JAX
array), taken without a copy where it already lives on the model's device. An array on
another device is an error that names both.

Checks run where the data lives, so device data never makes a host round trip: shapes
from the metadata, then the values (every feature finite; targets finite and in the
range the loss accepts) from a few reductions read back in one transfer. Host data is
checked in one pass and uploaded once per call. The data set must fit in the device's
memory: dnn keeps it there and gathers each batch on the device, and does not stream
from host memory; a data set larger than the free memory is refused before the upload
with the sizes named.
"""
from __future__ import annotations

import numpy

from .. import backend_scope, backends
from .sources import ArraySource


def _array(backend, data, name):
    """``data`` as an array of ``backend``, or a host NumPy array."""
    backend.check_array(data, name)
    if backend.is_native(data):
        arr = data
    elif hasattr(data, "__dlpack__") and not isinstance(data, numpy.ndarray):
        arr = backend.from_dlpack(data, name)
    else:
        try:
            arr = numpy.asarray(data)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name}: expected a numeric array; could not convert: {exc}") \
                from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numeric data (bool, int or float); "
                        f"got dtype {arr.dtype} (text labels: code them as integers "
                        f"first, e.g. codes, classes = dnn.data.encode_labels({name}); "
                        f"a pandas nullable column such as Float64 or Int64: "
                        f"{name}.to_numpy('float64', na_value=numpy.nan))")
    return arr


def _backend(model):
    """The model's backend, or the one it will be built on."""
    return model.backend or backend_scope.get_backend()


def _where(backend, arr):
    """The backend that computes on ``arr``: the model's, or NumPy for host data."""
    return backend if backend.is_native(arr) else backends.get_backend("numpy")


def _features_layout(arr, name, expected_dim):
    if arr.ndim == 1 and expected_dim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (samples, features); "
                         f"got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample; got shape {tuple(arr.shape)}")
    if expected_dim is not None and arr.shape[1] != expected_dim:
        raise ValueError(f"{name}: expected {expected_dim} features per sample (the model's "
                         f"input_dim); got {arr.shape[1]} (shape {tuple(arr.shape)})")
    return arr


def _raise_not_finite(backend, arr, name):
    """The error path: find the first non-finite value on the host and name it."""
    host = backend.to_numpy(arr)
    bad = numpy.argwhere(~numpy.isfinite(host))
    if bad.size:
        index = tuple(int(i) for i in bad[0])
        raise ValueError(f"{name}: expected finite values; got {host[index]} at index {index}")


def _check(model, x, y, name):
    """Check the values of ``x`` (and ``y``), with one read-back per place they live.

    A sum is finite exactly when every value is (NaN and infinities propagate); a
    finite array whose sum overflows is told apart on the error path."""
    places = {}
    for arr, arr_name in [(x, name)] + ([(y, "y")] if y is not None else []):
        places.setdefault(_where(model.backend, arr), []).append((arr, arr_name))
    for be, group in places.items():
        wanted = []
        with numpy.errstate(over="ignore", invalid="ignore"):  # overflow: see below
            for arr, _ in group:
                wanted.append(be.sum(arr) if arr.dtype.kind == "f" else be.xp.zeros(()))
                if arr is y:
                    wanted += be.value_summary(arr)
        values = iter(be.read_scalars(wanted))
        for arr, arr_name in group:
            if not numpy.isfinite(next(values)):
                _raise_not_finite(be, arr, arr_name)
            if arr is y:
                low, high, fractional = next(values), next(values), next(values)
                sample = None
                if fractional:
                    host = be.to_numpy(arr)
                    sample = host[host != numpy.round(host)].flat[0].item()
                model.loss.check_target_values(low, high, sample, model.output_dim)


def _fits(model, arrays, what):
    free = model.backend.free_memory()
    need = sum(int(a.size) * numpy.dtype(dtype).itemsize
               for a, dtype in arrays if not model.backend.is_native(a))
    if free is not None and need > free:
        raise MemoryError(
            f"{what}: the data needs {_size(need)} on {model.backend.device}, which has "
            f"{_size(free)} free: dnn keeps the data set in device memory and does not "
            f"stream it from the host. Pass part of the data per call, or train on the "
            f"numpy backend")


def _size(nbytes):
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def features(model, x, name="x", what="predict"):
    """``x`` checked and on the model's device in the compute dtype (building the model
    from its width if needed)."""
    x = _features_layout(_array(_backend(model), x, name), name, model.input_dim)
    if not model.built:
        model.build(x.shape[1])
    _check(model, x, None, name)
    _fits(model, [(x, model.compute_dtype)], what)
    return model.backend.asarray(x, dtype=model.compute_dtype)


def features_and_targets(model, x, y, name="x", what="fit", sample_weight=None,
                         class_weight=None):
    """``(x, y, w)`` checked and on the model's device: features in the compute dtype,
    targets in the layout and dtype the loss expects, and the per-sample weights from
    ``sample_weight`` and ``class_weight`` (their product, as Keras) or None."""
    x = _features_layout(_array(_backend(model), x, name), name, model.input_dim)
    if not model.built:
        model.build(x.shape[1])
    y = _array(model.backend, y, "y")
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        got = "a scalar" if y.ndim == 0 else f"{y.shape[0]} (shape {tuple(y.shape)})"
        raise ValueError(f"y: expected {x.shape[0]} targets, one per sample of {name}; "
                         f"got {got}")
    layout = model.loss.target_layout(y, model.output_dim)
    _check(model, x, y, name)  # on y as passed, so that an index names the user's element
    y_dtype = model.loss.target_dtype(model.dtype)
    w = _sample_weights(model, layout, x.shape[0], sample_weight, class_weight)
    _fits(model, [(x, model.compute_dtype), (layout, y_dtype)], what)
    be = model.backend
    return (be.asarray(x, dtype=model.compute_dtype), be.asarray(layout, dtype=y_dtype),
            None if w is None else be.asarray(w, dtype=model.dtype))


def _sample_weights(model, y, n, sample_weight, class_weight):
    """Host weights (n,) or None. class_weight reads the targets' classes on the host
    (device targets are read back once for it)."""
    weights = None
    if sample_weight is not None:
        weights = numpy.asarray(_host(model, _array(model.backend, sample_weight,
                                                    "sample_weight")), numpy.float64)
        if weights.ndim == 2 and weights.shape[1] == 1:
            weights = weights[:, 0]
        if weights.shape != (n,):
            raise ValueError(f"sample_weight: expected one weight per sample, shape ({n},); "
                             f"got shape {weights.shape}")
        _check_weights(weights, "sample_weight")
    if class_weight is not None:
        if not isinstance(class_weight, dict) or not class_weight:
            raise ValueError(f"class_weight: expected a dict {{class: weight}}; got "
                             f"{class_weight!r}")
        classes = model.loss.target_classes(_host(model, y))
        table = {int(k): float(v) for k, v in class_weight.items()}
        _check_weights(numpy.array(list(table.values())), "class_weight")
        missing = sorted(set(numpy.unique(classes).tolist()) - set(table))
        if missing:
            raise ValueError(f"class_weight: expected a weight for every class in y; got none "
                             f"for class{'es' if len(missing) > 1 else ''} "
                             f"{', '.join(map(str, missing[:10]))}")
        by_class = numpy.vectorize(table.__getitem__, otypes=[numpy.float64])(classes)
        weights = by_class if weights is None else weights * by_class
    return weights


def _host(model, arr):
    return model.backend.to_numpy(arr) if model.backend.is_native(arr) else numpy.asarray(arr)


def _check_weights(weights, name):
    if not numpy.isfinite(weights).all():
        raise ValueError(f"{name}: expected finite weights; got "
                         f"{weights[~numpy.isfinite(weights)][0]}")
    if (weights < 0).any():
        raise ValueError(f"{name}: expected weights >= 0; got {weights[weights < 0][0]:g}")


def split_validation(model, source, validation_split, validation_data):
    """``(training source, validation source or None)`` after ``validation_data`` ((x,
    y) or (x, y, sample_weight)) or ``validation_split`` (as Keras: the last fraction of
    the data, before any shuffling; the split is views)."""
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data: expected a tuple (x_val, y_val) or (x_val, "
                             f"y_val, sample_weight); got {type(validation_data).__name__}")
        val = features_and_targets(model, *validation_data[:2], name="validation_data",
                                   sample_weight=(validation_data[2:] or [None])[0])
        return source, ArraySource(*val)
    if not validation_split:
        return source, None
    split = int(round(source.rows * (1 - validation_split)))
    if split <= 0 or split >= source.rows:
        raise ValueError(f"validation_split: {validation_split} leaves an empty "
                         f"training or validation set for {source.rows} samples")
    return source.split(split)
