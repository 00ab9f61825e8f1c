"""Checks of arguments at the API boundary, so bad input fails with a message that names
the argument, the expected value and the received one, never deep inside a layer.
(Data arrays are checked in ``dnn.training.data_adapter``.)"""
from __future__ import annotations

import numbers

import numpy

# The dtypes a model's weights (and so its gradients and optimizer state) may have. The
# kernels' storage types (``dnn.kernels.catalogue.FLOAT_DTYPES``) add bfloat16, which
# only ever holds activations, under the policy below.
WEIGHT_DTYPES = ("float32", "float64")
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
    if dt is None or dt.name not in WEIGHT_DTYPES:
        raise ValueError(f"{name}: expected one of {', '.join(WEIGHT_DTYPES + MIXED_POLICIES)}; "
                         f"got {dtype!r}")
    return dt, dt


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive_number(value, name, allow_zero=False):
    """``value`` as a float, if it is a finite real number > 0 (>= 0 with
    ``allow_zero``); else a ValueError naming ``name``."""
    ok = _is_real(value) and numpy.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        expected = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name}: expected {expected}; got {value!r}")
    return float(value)


def check_number_in(value, name, low, high, closed="[]"):
    """``value`` as a float, if it is a real number in the interval from ``low`` to
    ``high``; ``closed`` says which ends belong to it: "[]", "[)", "(]" or "()"."""
    ok = _is_real(value) and not numpy.isnan(value)
    if ok:
        ok = (value >= low if closed[0] == "[" else value > low) and \
            (value <= high if closed[1] == "]" else value < high)
    if not ok:
        raise ValueError(f"{name}: expected a number in {closed[0]}{low:g}, {high:g}"
                         f"{closed[1]}; got {value!r}")
    return float(value)


def check_int_at_least(value, name, minimum):
    """``value`` as an int, if it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name}: expected {expected}; got {value!r}")
    return int(value)


def check_int(value, name):
    """``value`` as an int, if it is an integer (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: expected an integer; got {value!r}")
    return int(value)


def check_positive_int(value, name):
    return check_int_at_least(value, name, 1)


def check_nonnegative_int(value, name):
    return check_int_at_least(value, name, 0)


def check_bool(value, name):
    """``value`` if it is a bool (NumPy's included); a 0/1 or a string is refused, as
    ``"False"`` would read as true."""
    if not isinstance(value, (bool, numpy.bool_)):
        raise ValueError(f"{name}: expected True or False; got {value!r}")
    return bool(value)


def check_choice(value, name, choices):
    """``value`` if it is one of ``choices``."""
    if not any(value is c or (type(value) is type(c) and value == c) for c in choices):
        shown = [repr(c) for c in choices]
        listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
        raise ValueError(f"{name}: expected {listed}; got {value!r}")
    return value
