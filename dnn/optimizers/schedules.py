"""Learning-rate schedules with Keras 3's signatures, accepted as ``learning_rate=`` by
every optimizer: ``ExponentialDecay``, ``PiecewiseConstantDecay``, ``CosineDecay``,
``PolynomialDecay``, ``InverseTimeDecay`` and ``CosineDecayRestarts``.

A schedule is evaluated at the number of updates taken so far (as Keras evaluates it at
``optimizer.iterations``). On a GPU it is evaluated on the device inside the training
step, from the step count in device memory, so a schedule never forces a captured step
to be captured again; ``schedule(step)`` gives the same value on the host. The math is
``kernels.reference.scheduled_rate``; a schedule here only checks and encodes its
arguments.
"""
from __future__ import annotations

import numpy

from ..kernels import reference
from ..utils.validation import check_nonnegative_int, check_number_in, check_positive_number


def _positive(owner, name, value):
    """``value`` unchanged (an int stays an int, as Keras' configs keep it) if > 0."""
    check_positive_number(value, f"{owner}: {name}")
    return value


class LearningRateSchedule:
    def encode(self):
        """The schedule as float64 values: [kind, ...] (see reference.scheduled_rate)."""
        raise NotImplementedError

    def __call__(self, step):
        """The learning rate after ``step`` updates."""
        return float(reference.scheduled_rate(self.encode(), step))

    def get_config(self):
        raise NotImplementedError


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (the exponent
    floored with ``staircase``)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 name="ExponentialDecay"):
        owner = type(self).__name__
        self.initial_learning_rate = float(_positive(owner, "initial_learning_rate",
                                                     initial_learning_rate))
        self.decay_steps = _positive(owner, "decay_steps", decay_steps)
        self.decay_rate = float(_positive(owner, "decay_rate", decay_rate))
        self.staircase = bool(staircase)
        self.name = name

    def encode(self):
        return numpy.array([reference.SCHEDULE_EXPONENTIAL, self.initial_learning_rate,
                            self.decay_steps, self.decay_rate, float(self.staircase)])

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase, "name": self.name}


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while step <= boundaries[0], ``values[1]`` while step <=
    boundaries[1], ..., ``values[-1]`` after the last boundary."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        boundaries, values = list(boundaries), list(values)
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"PiecewiseConstantDecay: values: expected one more value than "
                             f"boundaries ({len(boundaries) + 1}); got {len(values)}")
        if any(b2 <= b1 for b1, b2 in zip(boundaries, boundaries[1:])):
            raise ValueError(f"PiecewiseConstantDecay: boundaries: expected increasing "
                             f"steps; got {boundaries}")
        for value in values:
            _positive("PiecewiseConstantDecay", "values", value)
        self.boundaries, self.values, self.name = boundaries, [float(v) for v in values], name

    def encode(self):
        return numpy.array([reference.SCHEDULE_PIECEWISE, len(self.boundaries),
                            *self.boundaries, *self.values], dtype=numpy.float64)

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Keras 3's ``CosineDecay(initial_learning_rate, decay_steps, alpha=0.0,
    name="CosineDecay", warmup_target=None, warmup_steps=0)``: with ``warmup_target`` a
    linear warm-up from ``initial_learning_rate`` to it over ``warmup_steps``, then a
    cosine decay over ``decay_steps`` down to ``alpha`` times the rate it started from."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay",
                 warmup_target=None, warmup_steps=0):
        owner = type(self).__name__
        self.initial_learning_rate = check_positive_number(
            initial_learning_rate, f"{owner}: initial_learning_rate", allow_zero=True)
        self.decay_steps = _positive(owner, "decay_steps", decay_steps)
        self.alpha = check_number_in(alpha, f"{owner}: alpha", 0, 1)
        self.warmup_target = None if warmup_target is None else float(
            _positive(owner, "warmup_target", warmup_target))
        warmup_steps = check_nonnegative_int(warmup_steps, f"{owner}: warmup_steps")
        if self.warmup_target is not None and warmup_steps == 0:
            raise ValueError(f"{owner}: warmup_steps: expected > 0 with a warmup_target; "
                             f"got 0")
        self.warmup_steps, self.name = warmup_steps, name

    def encode(self):
        warm = self.warmup_target is not None
        return numpy.array([reference.SCHEDULE_COSINE, self.initial_learning_rate,
                            self.decay_steps, self.alpha, float(warm),
                            self.warmup_target if warm else 0.0, self.warmup_steps],
                           dtype=numpy.float64)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha, "name": self.name,
                "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}


class PolynomialDecay(LearningRateSchedule):
    """Keras 3's ``PolynomialDecay(initial_learning_rate, decay_steps,
    end_learning_rate=0.0001, power=1.0, cycle=False, name="PolynomialDecay")``:
    ``(initial - end) * (1 - step / decay_steps) ** power + end``, the step held at
    decay_steps, or with ``cycle`` decay_steps stretched to the first multiple of it at
    or above the step."""

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001,
                 power=1.0, cycle=False, name="PolynomialDecay"):
        owner = type(self).__name__
        self.initial_learning_rate = float(_positive(owner, "initial_learning_rate",
                                                     initial_learning_rate))
        self.decay_steps = _positive(owner, "decay_steps", decay_steps)
        self.end_learning_rate = check_positive_number(
            end_learning_rate, f"{owner}: end_learning_rate", allow_zero=True)
        self.power = float(_positive(owner, "power", power))
        self.cycle = bool(cycle)
        self.name = name

    def encode(self):
        return numpy.array([reference.SCHEDULE_POLYNOMIAL, self.initial_learning_rate,
                            self.decay_steps, self.end_learning_rate, self.power,
                            float(self.cycle)])

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "end_learning_rate": self.end_learning_rate,
                "power": self.power, "cycle": self.cycle, "name": self.name}


class InverseTimeDecay(LearningRateSchedule):
    """Keras 3's ``InverseTimeDecay(initial_learning_rate, decay_steps, decay_rate,
    staircase=False, name="InverseTimeDecay")``: ``initial / (1 + decay_rate * step /
    decay_steps)``, the quotient floored with ``staircase``."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 name="InverseTimeDecay"):
        owner = type(self).__name__
        self.initial_learning_rate = float(_positive(owner, "initial_learning_rate",
                                                     initial_learning_rate))
        self.decay_steps = _positive(owner, "decay_steps", decay_steps)
        self.decay_rate = check_positive_number(decay_rate, f"{owner}: decay_rate",
                                                allow_zero=True)
        self.staircase = bool(staircase)
        self.name = name

    def encode(self):
        return numpy.array([reference.SCHEDULE_INVERSE_TIME, self.initial_learning_rate,
                            self.decay_steps, self.decay_rate, float(self.staircase)])

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase, "name": self.name}


class CosineDecayRestarts(LearningRateSchedule):
    """Keras 3's ``CosineDecayRestarts(initial_learning_rate, first_decay_steps,
    t_mul=2.0, m_mul=1.0, alpha=0.0, name="SGDRDecay")``: cosine decay from 1 to
    ``alpha`` over ``first_decay_steps``, then warm restarts, period i lasting ``t_mul**i``
    times as long and starting at ``m_mul**i`` times the initial rate (SGDR)."""

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0,
                 alpha=0.0, name="SGDRDecay"):
        owner = type(self).__name__
        self.initial_learning_rate = float(_positive(owner, "initial_learning_rate",
                                                     initial_learning_rate))
        self.first_decay_steps = _positive(owner, "first_decay_steps", first_decay_steps)
        self.t_mul = float(_positive(owner, "t_mul", t_mul))
        self.m_mul = float(_positive(owner, "m_mul", m_mul))
        self.alpha = check_number_in(alpha, f"{owner}: alpha", 0, 1)
        self.name = name

    def encode(self):
        return numpy.array([reference.SCHEDULE_COSINE_RESTARTS, self.initial_learning_rate,
                            self.first_decay_steps, self.t_mul, self.m_mul, self.alpha])

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "first_decay_steps": self.first_decay_steps, "t_mul": self.t_mul,
                "m_mul": self.m_mul, "alpha": self.alpha, "name": self.name}


SCHEDULES = {cls.__name__: cls for cls in (ExponentialDecay, PiecewiseConstantDecay,
                                           CosineDecay, PolynomialDecay, InverseTimeDecay,
                                           CosineDecayRestarts)}


def serialize(schedule):
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config):
    cls = SCHEDULES.get(config.get("class_name"))
    if cls is None:
        raise ValueError(f"learning_rate: expected a schedule of {', '.join(SCHEDULES)}; "
                         f"got {config.get('class_name')!r}")
    return cls(**config["config"])
