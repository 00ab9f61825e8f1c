"""Optimizers over the model's flat parameter buffer, one fused update per step, as Keras 3
computes them; learning-rate schedules in ``dnn.optimizers.schedules``.

SGD, RMSprop, Adam, AdamW, Nadam, Adamax, Adagrad and Lion, each with Keras' clipping,
decoupled weight decay, gradient accumulation and weight averaging (``base``).

State (momentum, moments, the step count) lives in buffers shaped like the flat
parameter buffer, on the model's device, so it moves, saves and restores with the
model rather than being keyed by parameter identity. The learning rate lives in device
memory too: a number set on the host, or a schedule evaluated on the device at every
step, so neither forces a captured step to be captured again.
"""
from __future__ import annotations

from . import schedules
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .base import FORMULAS, KERAS3, LEGACY, Optimizer
from .lion import Lion
from .nadam import Nadam
from .rmsprop import RMSprop
from .schedules import LearningRateSchedule
from .sgd import SGD

__all__ = ["FORMULAS", "KERAS3", "LEGACY", "OPTIMIZERS", "Adagrad", "Adam", "AdamW", "Adamax",
           "LearningRateSchedule", "Lion", "Nadam", "Optimizer", "RMSprop", "SGD", "get",
           "schedules"]

OPTIMIZERS = {cls.name: cls for cls in (SGD, Adam, AdamW, RMSprop, Nadam, Adamax, Adagrad,
                                        Lion)}


def get(identifier, **overrides):
    """An Optimizer from a name (with keyword overrides), an instance, or a config dict
    (``get_config()``'s). A config without a "formula" was written before dnn matched
    Keras 3, so it resumes with the legacy formula (see ``dnn.optimizers.base``)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        config = dict(identifier)
        cls = _lookup(config.pop("name", None))
        if getattr(cls, "has_legacy", False):
            config.setdefault("formula", LEGACY)
        return cls(**config)
    return _lookup(identifier)(**overrides)


def _lookup(name):
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)} or an "
                         f"Optimizer; got {name!r}")
    return OPTIMIZERS[name]
