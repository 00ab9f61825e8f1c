"""Weight penalties, as Keras: ``L1(l1=0.01)``, ``L2(l2=0.01)``, ``L1L2(l1=0.0, l2=0.0)``,
or the names "l1", "l2" and "l1_l2".

A penalty ``l1 * sum(|w|) + l2 * sum(w**2)`` is added to the loss that ``fit`` reports
and that ``loss_and_gradients`` returns, and its gradient ``l1 * sign(w) + 2 * l2 * w``
to the weight's gradient, on the device.
"""
from __future__ import annotations

from .utils.validation import check_positive_number


class Regularizer:
    def __init__(self, l1=0.0, l2=0.0):
        owner = type(self).__name__
        self.l1 = check_positive_number(l1, f"{owner}: l1", allow_zero=True)
        self.l2 = check_positive_number(l2, f"{owner}: l2", allow_zero=True)

    def get_config(self):
        return {"class_name": "L1L2", "l1": self.l1, "l2": self.l2}

    def __repr__(self):
        parts = [f"l1={self.l1:g}"] * bool(self.l1) + [f"l2={self.l2:g}"] * bool(self.l2)
        return f"{type(self).__name__}({', '.join(parts)})"


class L1(Regularizer):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)


class L2(Regularizer):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)


class L1L2(Regularizer):
    def __init__(self, l1=0.0, l2=0.0):
        super().__init__(l1=l1, l2=l2)


_NAMES = {"l1": L1, "l2": L2, "l1_l2": L1L2}


def get(identifier, owner="regularizer"):
    """None, a Regularizer, a name, or a config dict (as saved)."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, dict):
        return L1L2(identifier.get("l1", 0.0), identifier.get("l2", 0.0))
    if identifier not in _NAMES:
        raise ValueError(f"{owner}: expected None, a dnn.regularizers.Regularizer or one of "
                         f"{', '.join(_NAMES)}; got {identifier!r}")
    return _NAMES[identifier]()
