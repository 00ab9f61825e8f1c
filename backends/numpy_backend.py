"""NumPy backend: the CPU path."""
from __future__ import annotations

import numpy

from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = numpy

    def to_numpy(self, x):
        return numpy.asarray(x)
