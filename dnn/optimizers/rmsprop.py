"""Keras 3's RMSprop."""
from __future__ import annotations

from ..utils.validation import check_bool
from .base import Optimizer, StateSpec, check_fraction, check_positive


class RMSprop(Optimizer):
    """``RMSprop(learning_rate=1e-3, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
    weight_decay=0.0, ...)``, as Keras 3: ``v = rho v + (1 - rho) g^2`` and ``w -= lr g /
    sqrt(v + eps)`` (centered: ``sqrt(v - a^2 + eps)`` with ``a`` the mean gradient);
    with momentum ``b = m b + lr g / sqrt(...); w -= b``. The legacy formula (old files
    only) puts epsilon outside the root. State: ``sq_avg`` (Keras' velocities),
    ``velocity`` (its momentums), ``average_gradient``."""

    name = "rmsprop"
    rule = "rmsprop"
    has_legacy = True

    def __init__(self, learning_rate=1e-3, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False, weight_decay=0.0, **kwargs):
        super().__init__(learning_rate, weight_decay, **kwargs)
        self.rho = check_fraction("RMSprop", "rho", rho)
        self.momentum = check_fraction("RMSprop", "momentum", momentum)
        self.epsilon = check_positive("RMSprop", "epsilon", epsilon)
        self.centered = check_bool(centered, "RMSprop: centered")
        if self.centered and self.legacy:
            raise ValueError("RMSprop: centered: formula 'legacy' (files written before "
                             "Keras 3 parity) has no centered form; got centered=True")

    def _rule_state(self):
        state = {"sq_avg": StateSpec()}
        if self.momentum:
            state["velocity"] = StateSpec()
        if self.centered:
            state["average_gradient"] = StateSpec()
        return state

    def _update(self, params, grads, state, step, skip, learning_rate, options):
        be = self.backend
        if self.legacy:
            be.rmsprop_legacy_update(params, grads, state["sq_avg"], learning_rate, self.rho,
                                     self.epsilon, self.momentum, state.get("velocity"),
                                     self.weight_decay, skip)
            return
        be.rmsprop_update(params, grads, state["sq_avg"], learning_rate, rho=self.rho,
                          epsilon=self.epsilon, momentum=self.momentum,
                          velocity=state.get("velocity"), weight_decay=self.weight_decay,
                          skip=skip, average_gradient=state.get("average_gradient"),
                          options=options)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}
