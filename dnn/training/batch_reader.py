"""One batch of a user's batch source, read as ``fit`` reads arrays: unpacked, converted
(DLPack exporters such as torch tensors without a copy), checked where it lives, and
laid out as the loss expects. A bad batch is an error that names it (``batch 3: x:
expected finite values; got nan at index (5, 2)``): the index is what a sequence's
``__getitem__`` was given, or the batch's place in an iterable's pass, from 0.

The first batch sets what every later one must hold: targets or not, sample weights or
not; a batch that differs is named.
"""
from __future__ import annotations

import collections

import numpy

from . import checks
from .fingerprint import batch_fingerprint

# A batch read: features, targets (or None), weights (or None), all in the layout the
# step reads but not yet in its dtypes; ``fingerprint``: what ranks holding the same
# batches agree on.
Read = collections.namedtuple("Read", "x y weights fingerprint")

_FORMS = "(x, y) or (x, y, sample_weight)"


def _is_array_like(obj):
    return hasattr(obj, "shape") or hasattr(obj, "__dlpack__") or hasattr(obj, "__array__")


def unpack(batch, with_targets):
    """``(x, y, sample_weight)`` of a batch, None where absent. Batches are tuples (or
    lists: a DataLoader collates to lists) of 1 to 3 items; a bare array is ``(x,)``."""
    if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 3:
        parts = tuple(batch) + (None,) * (3 - len(batch))
    elif _is_array_like(batch):
        parts = (batch, None, None)
    else:
        kind = f"a {type(batch).__name__}" + (f" of {len(batch)} items" if isinstance(
            batch, (tuple, list)) else "")
        raise TypeError(f"expected a tuple {_FORMS}; got {kind}")
    if with_targets and parts[1] is None:
        raise ValueError(f"expected a tuple {_FORMS} (fit and evaluate need targets); got "
                         f"{'a batch without targets' if _is_array_like(batch) else '(x,)'}")
    return parts


class BatchReader:
    """Reads the batches of one source for ``model``. ``with_targets``: whether batches
    must carry targets (fit, evaluate) or only features are used (predict).
    ``class_table``: ``{class: weight}`` (fit's ``class_weight``) or None."""

    def __init__(self, model, with_targets=True, class_table=None):
        self.model = model
        self.with_targets = with_targets
        self.class_table = class_table
        self.weighted = None  # whether batches carry sample weights: set by the first

    def read(self, batch, index):
        """The ``Read`` of one batch; errors name the batch ``index``."""
        try:
            return self._read(batch)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"batch {index}: {exc}") from None

    def _read(self, batch):
        x, y, w = unpack(batch, self.with_targets)
        if not self.with_targets:
            x, x_sum = checks.checked_features(self.model, x, "x")
            return Read(x, None, None, batch_fingerprint([x_sum], x.shape[0]))
        self._check_form(w is not None)
        x, y, weights, sums = checks.checked_data(self.model, x, y, "x", w, self.class_table)
        return Read(x, y, weights, batch_fingerprint(sums, x.shape[0]))

    def _check_form(self, carries):
        """A batch must carry sample weights exactly when the first one did."""
        if self.weighted is None:
            self.weighted = carries
        elif carries != self.weighted:
            first = "(x, y, sample_weight)" if self.weighted else "(x, y)"
            raise ValueError(f"expected {first} batches, as the first batch was; got "
                             f"{'(x, y, sample_weight)' if carries else '(x, y)'}")

    @property
    def carries_weights(self):
        return bool(self.weighted) or self.class_table is not None


def stage_into(read, buffers):
    """Write a host batch into host buffers (one per spec), converting the dtypes as
    ``Backend.asarray`` does; weights go last when the buffers have a place for them
    (ones when this batch has none: it cannot, a reader checks that)."""
    numpy.copyto(buffers[0], read.x, casting="unsafe")
    if len(buffers) > 1:
        numpy.copyto(buffers[1], read.y, casting="unsafe")
    if len(buffers) > 2:
        numpy.copyto(buffers[2], read.weights, casting="unsafe")
    return buffers
