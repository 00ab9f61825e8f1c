"""Checks of arguments at the API boundary, so bad input fails with a message that names
the argument, the expected value and the received one, never deep inside a layer.
(Data arrays are checked in ``dnn.data_adapter``.)"""
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


def check_positive_number(value, name, allow_zero=False):
    """``value`` as a float, if it is a finite real number > 0 (>= 0 with
    ``allow_zero``); else a ValueError naming ``name``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        numpy.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        expected = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name}: expected {expected}; got {value!r}")
    return float(value)


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer; got {value!r}")
    return int(value)


def check_nonnegative_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name}: expected an integer >= 0; got {value!r}")
    return int(value)
