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

from ..utils.validation import check_number_in, check_positive_number
from . import schedules
from .schedules import LearningRateSchedule


def _check_positive(owner, name, value, allow_zero=False):
    return check_positive_number(value, f"{owner}: {name}", allow_zero)


def _check_fraction(owner, name, value):
    return check_number_in(value, f"{owner}: {name}", 0, 1, "[)")


class Optimizer:
    name = "optimizer"
    state_names: tuple = ()

    def __init__(self, learning_rate, clipnorm=None, clipvalue=None, weight_decay=0.0):
        owner = type(self).__name__
        if isinstance(learning_rate, dict):
            learning_rate = schedules.deserialize(learning_rate)
        if not isinstance(learning_rate, LearningRateSchedule):
            learning_rate = _check_positive(owner, "learning_rate", learning_rate)
        self._learning_rate = learning_rate
        self.clipnorm = None if clipnorm is None else _check_positive(owner, "clipnorm", clipnorm)
        self.clipvalue = None if clipvalue is None else \
            _check_positive(owner, "clipvalue", clipvalue)
        self.weight_decay = _check_positive(owner, "weight_decay", weight_decay, allow_zero=True)
        self.backend = None
        self.dtype = None
        self.state = {}
        # int64 (1,) on the device: steps taken. apply_gradients alone advances it.
        self.iterations = None
        # (1,) on the device: the rate of the next update, which a captured step reads.
        self.learning_rate_buffer = None
        self._encoded_schedule = None  # a schedule's encoding, float64 on the device

    def build(self, backend, size, dtype):
        """Allocate zeroed state for a flat buffer of ``size`` elements."""
        self.backend = backend
        self.dtype = dtype
        self.state = {name: backend.zeros((size,), dtype) for name in self.state_names}
        self.iterations = backend.zeros((1,), "int64")
        self.learning_rate_buffer = backend.zeros((1,), dtype)
        if self.scheduled:
            self._encoded_schedule = backend.asarray(self._learning_rate.encode())
        else:
            backend.fill(self.learning_rate_buffer, self._learning_rate)

    @property
    def learning_rate(self):
        """What was configured: a number, or a ``LearningRateSchedule`` (as Keras'
        ``optimizer.learning_rate``). ``current_learning_rate()`` gives the rate of the
        next update. Setting a number (not on a scheduled optimizer) takes effect at the
        next update, captured steps included."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        if self.scheduled:
            raise TypeError(f"{type(self).__name__}: learning_rate: this optimizer follows "
                            f"{type(self._learning_rate).__name__}; its rate cannot be set")
        self._learning_rate = _check_positive(type(self).__name__, "learning_rate", value)
        if self.learning_rate_buffer is not None:
            self.backend.fill(self.learning_rate_buffer, self._learning_rate)

    @property
    def scheduled(self):
        """Whether the learning rate follows a schedule."""
        return isinstance(self._learning_rate, LearningRateSchedule)

    def current_learning_rate(self):
        """The rate of the next update; for a schedule this reads the step count from
        the device."""
        if self.scheduled:
            return self._learning_rate(self.read_iterations())
        return self._learning_rate

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
        if self._encoded_schedule is not None:
            be.scheduled_rate(self._encoded_schedule, self.iterations, self.learning_rate_buffer)
        self._update(params, grads, self.state, self.iterations, skip,
                     self.learning_rate_buffer)

    def _update(self, params, grads, state, step, skip, learning_rate):
        """One update of ``params`` from ``grads`` with the state buffers ``state``, at
        the 1-based step held in the device array ``step``, at the rate held in the
        device array ``learning_rate``: one backend call."""
        raise NotImplementedError

    def warmup(self):
        """Run one update on scratch buffers of the smallest size that takes the
        backend's fused path, so that compiling it happens outside any timing."""
        be, n = self.backend, self.backend.fused_update_min_size
        scratch = {name: be.zeros((n,), self.dtype) for name in self.state_names}
        step = be.asarray(numpy.ones(1, numpy.int64))
        learning_rate = be.zeros((1,), self.dtype)
        if self._encoded_schedule is not None:
            be.scheduled_rate(self._encoded_schedule, step, learning_rate)
        self._update(be.zeros((n,), self.dtype), be.zeros((n,), self.dtype), scratch, step,
                     None, learning_rate)

    def get_config(self):
        rate = schedules.serialize(self._learning_rate) if self.scheduled \
            else self._learning_rate
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

    def read_iterations(self):
        """The number of updates taken, read from the device (0 before ``build``)."""
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

    def _update(self, params, grads, state, step, skip, learning_rate):
        self.backend.sgd_update(params, grads, state.get("velocity"), learning_rate,
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

    def _update(self, params, grads, state, step, skip, learning_rate):
        self.backend.adam_update(params, grads, state["m"], state["v"], step,
                                 learning_rate,
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

    def _update(self, params, grads, state, step, skip, learning_rate):
        self.backend.rmsprop_update(params, grads, state["sq_avg"], learning_rate,
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
