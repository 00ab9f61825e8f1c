"""Optimizers over the model's flat parameter buffer: one fused update per step.

State (momentum, moments, the step count) lives in buffers shaped like the flat
parameter buffer, on the model's device, so it moves, saves and restores with the
model rather than being keyed by parameter identity. The learning rate lives in device
memory too: a number set on the host, or a schedule (``dnn.optimizers.schedules``)
evaluated on the device at every step, so neither forces a captured step to be
captured again.
"""
from __future__ import annotations

import numpy

from ..validation import check_positive_number
from . import schedules
from .schedules import LearningRateSchedule


def _check_positive(owner, name, value, allow_zero=False):
    return check_positive_number(value, f"{owner}: {name}", allow_zero)


def _check_fraction(owner, name, value):
    ok = isinstance(value, (int, float, numpy.floating)) and not isinstance(value, bool) \
        and 0 <= value < 1
    if not ok:
        raise ValueError(f"{owner}: {name}: expected a number in [0, 1); got {value!r}")
    return float(value)


class Optimizer:
    name = "optimizer"
    state_names: tuple = ()

    def __init__(self, learning_rate, clipnorm=None, clipvalue=None, weight_decay=0.0):
        owner = type(self).__name__
        if isinstance(learning_rate, dict):
            learning_rate = schedules.deserialize(learning_rate)
        self.schedule = learning_rate if isinstance(learning_rate, LearningRateSchedule) \
            else None
        self._rate = None if self.schedule else _check_positive(owner, "learning_rate",
                                                                learning_rate)
        self.clipnorm = None if clipnorm is None else _check_positive(owner, "clipnorm", clipnorm)
        self.clipvalue = None if clipvalue is None else \
            _check_positive(owner, "clipvalue", clipvalue)
        self.weight_decay = _check_positive(owner, "weight_decay", weight_decay, allow_zero=True)
        self.backend = None
        self.dtype = None
        self.state = {}
        # int64 (1,) on the device: steps taken. apply_gradients alone advances it.
        self.iterations = None
        self.lr = None  # (1,) on the device: the rate of the next update
        self._schedule = None  # the encoded schedule, float64 on the device

    def build(self, backend, size, dtype):
        """Allocate zeroed state for a flat buffer of ``size`` elements."""
        self.backend = backend
        self.dtype = dtype
        self.state = {name: backend.zeros((size,), dtype) for name in self.state_names}
        self.iterations = backend.zeros((1,), "int64")
        self.lr = backend.zeros((1,), dtype)
        if self.schedule is None:
            backend.fill(self.lr, self._rate)
        else:
            self._schedule = backend.asarray(self.schedule.encode())

    @property
    def learning_rate(self):
        """The current learning rate: the number set, or the schedule's value after the
        updates taken so far."""
        if self.schedule is None:
            return self._rate
        return self.schedule(self.step_count)

    @learning_rate.setter
    def learning_rate(self, value):
        if self.schedule is not None:
            raise TypeError(f"{type(self).__name__}: learning_rate: this optimizer follows "
                            f"{type(self.schedule).__name__}; its rate cannot be set")
        self._rate = _check_positive(type(self).__name__, "learning_rate", value)
        if self.lr is not None:
            self.backend.fill(self.lr, self._rate)

    def apply_gradients(self, params, grads, skip=None):
        """Clip ``grads`` (in place), count the step, and update ``params`` in place;
        nothing changes, the count included, when the device flag ``skip`` is set (see
        ``Backend.guard_finite``)."""
        be = self.backend
        if self.clipvalue is not None:
            be.clip_by_value(grads, self.clipvalue)
        if self.clipnorm is not None:
            be.clip_by_global_norm(grads, self.clipnorm)
        be.increment_step(self.iterations, skip=skip)
        if self._schedule is not None:
            be.scheduled_rate(self._schedule, self.iterations, self.lr)
        self._update(params, grads, self.state, self.iterations, skip, self.lr)

    def _update(self, params, grads, state, step, skip, lr):
        """One update of ``params`` from ``grads`` with the state buffers ``state``, at
        the 1-based step held in the device array ``step``, at the rate in ``lr`` (a
        device array): one backend call."""
        raise NotImplementedError

    def warmup(self):
        """Run one update on scratch buffers of the smallest size that takes the
        backend's fused path, so that compiling it happens outside any timing."""
        be, n = self.backend, self.backend.fused_update_min_size
        scratch = {name: be.zeros((n,), self.dtype) for name in self.state_names}
        step = be.asarray(numpy.ones(1, numpy.int64))
        lr = be.zeros((1,), self.dtype)
        if self._schedule is not None:
            be.scheduled_rate(self._schedule, step, lr)
        self._update(be.zeros((n,), self.dtype), be.zeros((n,), self.dtype), scratch, step,
                     None, lr)

    def get_config(self):
        rate = self._rate if self.schedule is None else schedules.serialize(self.schedule)
        return {"name": self.name, "learning_rate": rate,
                "clipnorm": self.clipnorm, "clipvalue": self.clipvalue,
                "weight_decay": self.weight_decay}

    def get_state(self):
        """Host copies of the state: ``{"iterations": ..., name: flat array}``."""
        be = self.backend
        out = {name: be.to_numpy(buf).copy() for name, buf in self.state.items()}
        out["iterations"] = be.to_numpy(self.iterations).copy()
        return out

    def set_state(self, state):
        be = self.backend
        expected = set(self.state_names) | {"iterations"}
        if set(state) != expected:
            raise ValueError(f"{type(self).__name__}: state: expected arrays "
                             f"{sorted(expected)}; got {sorted(state)}")
        for name, value in state.items():
            target = self.iterations if name == "iterations" else self.state[name]
            value = numpy.asarray(value)
            if value.shape != tuple(target.shape):
                raise ValueError(f"{type(self).__name__}: state {name!r}: expected shape "
                                 f"{tuple(target.shape)}; got {value.shape}")
            be.copy(be.asarray(value, dtype=target.dtype), out=target)

    @property
    def step_count(self):
        return int(self.backend.to_numpy(self.iterations)[0]) if self.iterations is not None else 0


class SGD(Optimizer):
    """``SGD(learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0)``;
    weight decay is L2 added to the gradient, as in PyTorch."""
    name = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0,
                 clipnorm=None, clipvalue=None):
        super().__init__(learning_rate, clipnorm, clipvalue, weight_decay)
        self.momentum = _check_fraction("SGD", "momentum", momentum)
        if nesterov and not self.momentum:
            raise ValueError(f"SGD: nesterov: expected momentum > 0 with nesterov=True; "
                             f"got momentum={momentum!r}")
        self.nesterov = bool(nesterov)
        self.state_names = ("velocity",) if self.momentum else ()

    def _update(self, params, grads, state, step, skip, lr):
        self.backend.sgd_update(params, grads, state.get("velocity"), lr,
                                momentum=self.momentum, nesterov=self.nesterov,
                                weight_decay=self.weight_decay, skip=skip)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """``Adam(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7)``, Keras'
    formulation. ``weight_decay`` here is L2 added to the gradient; use AdamW for
    decoupled decay."""
    name = "adam"
    state_names = ("m", "v")
    decoupled = False

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 weight_decay=0.0, clipnorm=None, clipvalue=None):
        super().__init__(learning_rate, clipnorm, clipvalue, weight_decay)
        owner = type(self).__name__
        self.beta_1 = _check_fraction(owner, "beta_1", beta_1)
        self.beta_2 = _check_fraction(owner, "beta_2", beta_2)
        self.epsilon = _check_positive(owner, "epsilon", epsilon)

    def _update(self, params, grads, state, step, skip, lr):
        self.backend.adam_update(params, grads, state["m"], state["v"], step, lr,
                                 beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon,
                                 weight_decay=self.weight_decay,
                                 decoupled_weight_decay=self.decoupled, skip=skip)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.004, as in Keras)."""
    name = "adamw"
    decoupled = True

    def __init__(self, learning_rate=1e-3, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, clipnorm=None, clipvalue=None):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay, clipnorm,
                         clipvalue)


class RMSprop(Optimizer):
    """``RMSprop(learning_rate=1e-3, rho=0.9, momentum=0.0, epsilon=1e-7)``."""
    name = "rmsprop"

    def __init__(self, learning_rate=1e-3, rho=0.9, momentum=0.0, epsilon=1e-7,
                 weight_decay=0.0, clipnorm=None, clipvalue=None):
        super().__init__(learning_rate, clipnorm, clipvalue, weight_decay)
        self.rho = _check_fraction("RMSprop", "rho", rho)
        self.momentum = _check_fraction("RMSprop", "momentum", momentum)
        self.epsilon = _check_positive("RMSprop", "epsilon", epsilon)
        self.state_names = ("sq_avg", "velocity") if self.momentum else ("sq_avg",)

    def _update(self, params, grads, state, step, skip, lr):
        self.backend.rmsprop_update(params, grads, state["sq_avg"], lr,
                                    rho=self.rho, epsilon=self.epsilon, momentum=self.momentum,
                                    velocity=state.get("velocity"),
                                    weight_decay=self.weight_decay, skip=skip)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon}


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get(identifier, **overrides):
    """An Optimizer from a name (with keyword overrides), an instance, or a config dict."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        config = dict(identifier)
        return get(config.pop("name"), **config)
    if identifier not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)} or an "
                         f"Optimizer; got {identifier!r}")
    return OPTIMIZERS[identifier](**overrides)
