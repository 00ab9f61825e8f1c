"""What one array given to ``fit``, ``evaluate`` or ``predict`` must be, checked where it
lives: numeric, 2-D features of the model's width, finite values, targets the loss
accepts, sample weights finite and >= 0. Used on whole arrays (``data_adapter``) and
batch by batch (``batch_reader``, and the streamed arrays of ``host_source``).

Device data is checked on the device with a few reductions read back in one transfer;
host data on the host. A sum is finite exactly when every value is (NaN and infinities
propagate); a finite array whose sum overflows is told apart on the error path.
"""
from __future__ import annotations

import numpy

from .. import backend_scope, backends


def model_backend(model):
    """The model's backend, or the one it will be built on."""
    return model.backend or backend_scope.get_backend()


def as_array(backend, data, name):
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


def where(backend, arr):
    """The backend that computes on ``arr``: the model's, or NumPy for host data."""
    return backend if backend.is_native(arr) else backends.get_backend("numpy")


def features_layout(arr, name, expected_dim):
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


def shaped_features(model, x, name):
    """``x`` (an array) as 2-D features of the model's width (``features_layout``); the
    model is built from their width if it is not yet."""
    x = features_layout(x, name, model.input_dim)
    if not model.built:
        model.build(x.shape[1])
    return x


def checked_features(model, x, name):
    """``(x, sum)``: features ``x`` as an array where they live (``as_array``), shaped
    (``shaped_features``) and their values checked (``check_values``)."""
    x = shaped_features(model, as_array(model_backend(model), x, name), name)
    return x, check_values(model, x, None, name)[0]


def checked_data(model, x, y, name, sample_weight=None, class_table=None):
    """``(x, y, weights, sums)`` of features ``x`` and targets ``y``, each an array where
    it lives, checked: the features as ``checked_features``, one target per row, the
    targets in the loss's layout (their values checked as passed, so that an index names
    the user's element); ``weights``: ``row_weights`` of ``sample_weight`` and the class
    weights ``class_table``; ``sums``: what ``check_values`` read. What ``fit`` checks
    of whole arrays (``data_adapter``) and of each batch of a source (``batch_reader``)."""
    x = shaped_features(model, as_array(model_backend(model), x, name), name)
    y = as_array(model.backend, y, "y")
    matching_targets(y, x.shape[0], name)
    layout = model.loss.target_layout(y, model.output_dim)
    sums = check_values(model, x, y, name)
    weights = None if sample_weight is None else sample_weights(model, sample_weight,
                                                                x.shape[0])
    return x, layout, row_weights(model, layout, weights, class_table), sums


def matching_targets(y, rows, name):
    """Raise unless ``y`` holds one target per row of the features ``name``."""
    if y.ndim == 0 or y.shape[0] != rows:
        got = "a scalar" if y.ndim == 0 else f"{y.shape[0]} (shape {tuple(y.shape)})"
        raise ValueError(f"y: expected {rows} targets, one per sample of {name}; got {got}")


def raise_not_finite(backend, arr, name, rows=None):
    """The error path: find the first non-finite value on the host and name it (its
    first index mapped through ``rows``, the user's row of each, when given)."""
    host = backend.to_numpy(arr)
    bad = numpy.argwhere(~numpy.isfinite(host))
    if bad.size:
        index = tuple(int(i) for i in bad[0])
        value = host[index]
        if rows is not None:
            index = (int(rows[index[0]]),) + index[1:]
        raise ValueError(f"{name}: expected finite values; got {value} at index {index}")


def check_values(model, x, y, name, rows=None):
    """Check the values of ``x`` (and ``y``, or None), with one read-back per place they
    live; returns the sums read (``(x, y)``, 0.0 for what is not a float array or is
    None). ``rows``: the user's row of each row, for the error messages."""
    places = {}
    for arr, arr_name in [(x, name)] + ([(y, "y")] if y is not None else []):
        places.setdefault(where(model.backend, arr), []).append((arr, arr_name))
    sums = {}
    for be, group in places.items():
        wanted = []
        with numpy.errstate(over="ignore", invalid="ignore"):  # overflow: see the module
            for arr, _ in group:
                wanted.append(be.sum(arr) if arr.dtype.kind == "f" else be.zeros(()))
                if arr is y:
                    wanted += be.value_summary(model.loss.checked_targets(arr, be.xp))
        values = iter(be.read_scalars(wanted))
        for arr, arr_name in group:
            total = sums[arr_name] = next(values)
            if not numpy.isfinite(total):
                raise_not_finite(be, arr, arr_name, rows)
                sums[arr_name] = numpy.finfo(numpy.float64).max  # finite, overflowed
            if arr is y:
                low, high, fractional = next(values), next(values), next(values)
                sample = None
                if fractional:
                    host = be.to_numpy(arr)
                    sample = host[host != numpy.round(host)].flat[0].item()
                model.loss.check_target_values(low, high, sample, model.output_dim)
    return sums[name], sums.get("y", 0.0)


def host(model, arr):
    return model.backend.to_numpy(arr) if model.backend.is_native(arr) else numpy.asarray(arr)


def check_weights(weights, name):
    if not numpy.isfinite(weights).all():
        raise ValueError(f"{name}: expected finite weights; got "
                         f"{weights[~numpy.isfinite(weights)][0]}")
    if (weights < 0).any():
        raise ValueError(f"{name}: expected weights >= 0; got {weights[weights < 0][0]:g}")


def sample_weights(model, weights, n):
    """Per-sample weights as host float64 ``(n,)``, checked."""
    weights = numpy.asarray(host(model, as_array(model.backend, weights, "sample_weight")),
                            numpy.float64)
    if weights.ndim == 2 and weights.shape[1] == 1:
        weights = weights[:, 0]
    if weights.shape != (n,):
        raise ValueError(f"sample_weight: expected one weight per sample, shape ({n},); "
                         f"got shape {weights.shape}")
    check_weights(weights, "sample_weight")
    return weights


def class_weight_table(class_weight):
    """``{class: weight}`` checked, or None."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict) or not class_weight:
        raise ValueError(f"class_weight: expected a dict {{class: weight}}; got "
                         f"{class_weight!r}")
    table = {int(k): float(v) for k, v in class_weight.items()}
    check_weights(numpy.array(list(table.values())), "class_weight")
    return table


def row_weights(model, y, weights, table):
    """What each row of targets ``y`` (in the loss's layout) weighs in the loss: its
    sample weight (``weights``: host float64, checked, or None) times its class's weight
    in ``table`` (``class_weight_table``, or None), their product as Keras takes it;
    None when neither is given. The one rule for arrays, streamed arrays and batches."""
    if table is None:
        return weights
    by_class = class_weights(model, y, table)
    return by_class if weights is None else weights * by_class


def class_weights(model, y, table):
    """Host float64 weights of the targets ``y`` (in the loss's layout) by class."""
    classes = model.loss.target_classes(host(model, y))
    missing = sorted(set(numpy.unique(classes).tolist()) - set(table))
    if missing:
        raise ValueError(f"class_weight: expected a weight for every class in y; got none "
                         f"for class{'es' if len(missing) > 1 else ''} "
                         f"{', '.join(map(str, missing[:10]))}")
    return numpy.vectorize(table.__getitem__, otypes=[numpy.float64])(classes)
