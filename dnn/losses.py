"""Losses. Each computes the batch-mean loss and its gradient in one backend call.

Softmax + categorical cross-entropy and sigmoid + binary cross-entropy are computed
from logits: the model then trains its output layer without the activation
(``Dense.emit_logits``), which is both stable and one pass cheaper.
"""
from __future__ import annotations

import numpy

from .utils.validation import check_int, check_number_in, check_positive_number


class Loss:
    name = "loss"
    # The output activation whose fusion with this loss is computed from logits.
    fused_activation = None
    # Output activations this loss accepts as they are; None means any.
    accepted_activations = None

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def uses_logits(self, output_activation):
        """Whether to feed logits to this loss, given the output layer's activation.

        Raises ValueError when the loss cannot be used with that output.
        """
        if self.fused_activation is None:
            return False
        if output_activation == self.fused_activation:
            return True
        if output_activation == "linear" and self.from_logits:
            return True
        raise ValueError(
            f"loss {self.name!r}: expected an output layer with activation "
            f"{self.fused_activation!r} (or a linear output with from_logits=True); "
            f"got activation {output_activation!r}")

    # What target values may be: (low, high) bounds, inclusive, and whether they must be
    # whole numbers. None: any finite value.
    target_bounds = None
    integer_targets = False

    def target_layout(self, y, output_dim):
        """Check the targets' shape (on any array type: nothing is read) and return them
        in the layout ``__call__`` expects."""
        raise NotImplementedError

    def target_dtype(self, dtype):
        """The dtype targets are stored in, for a model of weight dtype ``dtype``."""
        return dtype

    def check_target_values(self, low, high, fractional, output_dim):
        """Raise for targets outside what this loss accepts, from their smallest and
        largest value and whether any is not a whole number (``fractional``: one such
        value, or None)."""
        if self.integer_targets and fractional is not None:
            raise ValueError(f"y: loss {self.name!r} expects integer labels; got "
                             f"non-integer values such as {fractional}")
        bounds = self.bounds(output_dim)
        if bounds is not None and (low < bounds[0] or high > bounds[1]):
            raise ValueError(self.out_of_bounds(low if low < bounds[0] else high, low, high,
                                                output_dim))

    def bounds(self, output_dim):
        return self.target_bounds

    def checked_targets(self, y, xp):
        """The targets whose values ``check_target_values`` judges (device arrays; a loss
        that ignores some targets leaves them out)."""
        return y

    def out_of_bounds(self, value, low, high, output_dim):
        return f"y: loss {self.name!r} expects targets in [0, 1]; got {value:g}"

    def __call__(self, backend, output, target, grad_out=None, weights=None):
        """``(loss, grad)``: the 0-d device loss and d(loss)/d(output); ``weights``:
        per-sample weights (rows,) or None (the weighted sum over the batch size)."""
        raise NotImplementedError

    def target_classes(self, y):
        """The class of each target row (host NumPy), for ``class_weight``."""
        raise ValueError(f"class_weight: expected a classification loss; got loss "
                         f"{self.name!r}")

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}


def _as_float_targets(y, output_dim, loss_name):
    if y.ndim == 1 and output_dim == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[1] != output_dim:
        raise ValueError(f"y: loss {loss_name!r} with an output layer of {output_dim} units "
                         f"expects targets of shape (n, {output_dim})"
                         f"{' or (n,)' if output_dim == 1 else ''}; got shape {y.shape}")
    return y


class MeanSquaredError(Loss):
    name = "mse"

    def target_layout(self, y, output_dim):
        return _as_float_targets(y, output_dim, self.name)

    def __call__(self, backend, output, target, grad_out=None, weights=None):
        return backend.mean_squared_error(output, target, grad_out, weights)


class MeanAbsoluteError(MeanSquaredError):
    name = "mae"

    def __call__(self, backend, output, target, grad_out=None, weights=None):
        return backend.mean_absolute_error(output, target, grad_out, weights)


class Huber(MeanSquaredError):
    """``Huber(delta=1.0)``: quadratic for errors within ``delta``, linear beyond."""
    name = "huber"

    def __init__(self, delta=1.0, from_logits=False):
        super().__init__(from_logits)
        self.delta = check_positive_number(delta, "Huber: delta")

    def __call__(self, backend, output, target, grad_out=None, weights=None):
        return backend.huber(output, target, self.delta, grad_out, weights)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


def _check_smoothing(owner, label_smoothing):
    return check_number_in(label_smoothing, f"{owner}: label_smoothing", 0, 1)


class BinaryCrossentropy(Loss):
    """``BinaryCrossentropy(from_logits=False, label_smoothing=0.0)``: with smoothing ls
    the targets become t (1 - ls) + ls / 2."""
    name = "binary_crossentropy"
    fused_activation = "sigmoid"
    target_bounds = (0, 1)

    def __init__(self, from_logits=False, label_smoothing=0.0):
        super().__init__(from_logits)
        self.label_smoothing = _check_smoothing(type(self).__name__, label_smoothing)

    def target_layout(self, y, output_dim):
        return _as_float_targets(y, output_dim, self.name)

    def target_classes(self, y):
        if y.shape[1] != 1:
            raise ValueError("class_weight: expected one binary output; got "
                             f"{y.shape[1]} outputs (use sample_weight)")
        return numpy.rint(y[:, 0]).astype(numpy.int64)

    def __call__(self, backend, output, target, grad_out=None, weights=None):
        return backend.sigmoid_binary_cross_entropy(output, target, grad_out, weights,
                                                    self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class CategoricalCrossentropy(Loss):
    """Targets are one-hot (or probability) rows of shape (n, classes).
    ``CategoricalCrossentropy(from_logits=False, label_smoothing=0.0)``: with smoothing
    ls the targets become t (1 - ls) + ls / classes."""
    name = "categorical_crossentropy"
    fused_activation = "softmax"
    target_bounds = (0, 1)

    def __init__(self, from_logits=False, label_smoothing=0.0):
        super().__init__(from_logits)
        self.label_smoothing = _check_smoothing(type(self).__name__, label_smoothing)

    def target_classes(self, y):
        return y.argmax(axis=1)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}

    def target_layout(self, y, output_dim):
        if y.ndim != 2 or y.shape[1] != output_dim:
            hint = " (integer labels need 'sparse_categorical_crossentropy')" if y.ndim == 1 else ""
            raise ValueError(f"y: loss {self.name!r} expects one-hot targets of shape "
                             f"(n, {output_dim}); got shape {tuple(y.shape)}{hint}")
        return y

    def out_of_bounds(self, value, low, high, output_dim):
        return (f"y: loss {self.name!r} expects one-hot or probability rows with values in "
                f"[0, 1]; got values in [{low:g}, {high:g}]")

    def __call__(self, backend, output, target, grad_out=None, weights=None):
        return backend.softmax_cross_entropy(output, target, grad_out, weights,
                                             self.label_smoothing)


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Targets are integer class ids of shape (n,) in [0, classes).
    ``SparseCategoricalCrossentropy(from_logits=False, ignore_class=None,
    label_smoothing=0.0)``: with ``ignore_class`` (any integer, in [0, classes) or not,
    as Keras's), samples with that label add nothing to the loss or its gradient and the
    mean is over the others (0 when none is left), as Keras masks them."""
    name = "sparse_categorical_crossentropy"
    integer_targets = True

    def __init__(self, from_logits=False, ignore_class=None, label_smoothing=0.0):
        super().__init__(from_logits, label_smoothing)
        self.ignore_class = None if ignore_class is None else check_int(
            ignore_class, f"{type(self).__name__}: ignore_class")

    def checked_targets(self, y, xp):
        if self.ignore_class is None:
            return y
        return xp.where(y == self.ignore_class, 0, y)

    def __call__(self, backend, output, target, grad_out=None, weights=None):
        return backend.softmax_cross_entropy(output, target, grad_out, weights,
                                             self.label_smoothing, self.ignore_class)

    def get_config(self):
        config = super().get_config()
        return config if self.ignore_class is None else {**config,
                                                         "ignore_class": self.ignore_class}

    def target_classes(self, y):
        return numpy.rint(y).astype(numpy.int64)

    def target_layout(self, y, output_dim):
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"y: loss {self.name!r} expects integer labels of shape (n,); "
                             f"got shape {tuple(y.shape)}")
        return y

    def target_dtype(self, dtype):
        return numpy.dtype(numpy.int64)

    def bounds(self, output_dim):
        return 0, output_dim - 1

    def out_of_bounds(self, value, low, high, output_dim):
        return (f"y: labels must be in [0, {output_dim}) for an output layer of "
                f"{output_dim} units; got label {value:g}")


# Keras's names for the losses dnn has (keras.losses.ALL_OBJECTS_DICT): each class's name,
# its function's name, and the short aliases.
LOSSES = {}
for _cls, _names in (
        (MeanSquaredError, ("mse", "mean_squared_error", "MSE")),
        (MeanAbsoluteError, ("mae", "mean_absolute_error", "MAE")),
        (Huber, ("huber",)),
        (BinaryCrossentropy, ("binary_crossentropy", "bce", "BCE")),
        (CategoricalCrossentropy, ("categorical_crossentropy",)),
        (SparseCategoricalCrossentropy, ("sparse_categorical_crossentropy",))):
    for _name in _names + (_cls.__name__,):
        LOSSES[_name] = _cls
del _cls, _names, _name


def get(identifier):
    """A Loss from a name, an instance, or a config dict."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, dict):
        config = dict(identifier)
        return LOSSES[_check_name(config.pop("name"))](**config)
    return LOSSES[_check_name(identifier)]()


def _check_name(name):
    if name not in LOSSES:
        raise ValueError(f"loss: expected one of {', '.join(LOSSES)} or a Loss; got {name!r}")
    return name
