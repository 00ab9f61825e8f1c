"""Checks at the API boundary, so bad input fails with a message that names the
argument, the expected value and the received one, never deep inside a layer."""
from __future__ import annotations

import numbers

import numpy

FLOAT_DTYPES = ("float32", "float64")
MIXED_POLICIES = ("mixed_bfloat16",)


def bfloat16():
    """NumPy's bfloat16 dtype, from ml_dtypes (the ``bf16`` extra)."""
    try:
        import ml_dtypes
    except ImportError as exc:
        raise ImportError("dtype 'mixed_bfloat16' needs ml_dtypes: pip install ml_dtypes "
                          "(or pip install '.[bf16]' in the dnn checkout)") \
            from exc
    return numpy.dtype(ml_dtypes.bfloat16)


def check_dtype(dtype, name="dtype"):
    """``(variable dtype, compute dtype)``: the dtype of the weights, gradients and
    optimizer state, and the dtype activations are computed in. They differ only for
    the mixed policy "mixed_bfloat16" (float32 weights, bfloat16 compute), as in Keras."""
    if dtype in MIXED_POLICIES:
        return numpy.dtype("float32"), bfloat16()
    try:
        dt = numpy.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected one of {', '.join(FLOAT_DTYPES + MIXED_POLICIES)}; "
                         f"got {dtype!r}")
    return dt, dt


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer; got {value!r}")
    return int(value)


def check_nonnegative_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name}: expected an integer >= 0; got {value!r}")
    return int(value)


def _numeric(a, name):
    try:
        arr = numpy.asarray(a)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name}: expected a numeric array; could not convert: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numeric data (bool, int or float); "
                        f"got dtype {arr.dtype}")
    return arr


def check_features(x, name="x", expected_dim=None):
    """Return ``x`` as a 2-D finite numeric host array of shape (n, features).

    A 1-D array is taken as n samples of one feature only when ``expected_dim`` is 1.
    """
    arr = _numeric(x, name)
    if arr.ndim == 1 and expected_dim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (samples, features); "
                         f"got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample; got shape {arr.shape}")
    if expected_dim is not None and arr.shape[1] != expected_dim:
        raise ValueError(f"{name}: expected {expected_dim} features per sample (the model's "
                         f"input_dim); got {arr.shape[1]} (shape {arr.shape})")
    check_finite(arr, name)
    return arr


def check_targets(y, n, name="y"):
    arr = _numeric(y, name)
    if arr.ndim == 0 or arr.shape[0] != n:
        got = "a scalar" if arr.ndim == 0 else f"{arr.shape[0]} (shape {arr.shape})"
        raise ValueError(f"{name}: expected {n} targets, one per sample of x; got {got}")
    check_finite(arr, name)
    return arr


def check_finite(arr, name):
    # min and max propagate NaN and expose +-inf without the array-sized temporary of
    # isfinite(arr).all(); the slow search for the culprit runs only on failure.
    if arr.dtype.kind == "f" and arr.size and not (
            numpy.isfinite(arr.min()) and numpy.isfinite(arr.max())):
        bad = numpy.argwhere(~numpy.isfinite(arr))[0]
        value = arr[tuple(bad)]
        raise ValueError(f"{name}: expected finite values; got {value} at index "
                         f"{tuple(int(i) for i in bad)}")
