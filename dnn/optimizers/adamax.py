"""Keras 3's Adamax."""
from __future__ import annotations

from .base import Optimizer, StateSpec, check_fraction, check_positive


class Adamax(Optimizer):
    """``Adamax(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
    weight_decay=0.0, ...)``: Adam with the infinity norm, ``u = max(beta_2 u, |g|)``,
    ``w -= lr m / ((1 - beta_1^t)(u + eps))`` (Keras 3)."""

    name = "adamax"
    rule = "adamax"

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 weight_decay=0.0, **kwargs):
        super().__init__(learning_rate, weight_decay, **kwargs)
        self.beta_1 = check_fraction("Adamax", "beta_1", beta_1)
        self.beta_2 = check_fraction("Adamax", "beta_2", beta_2)
        self.epsilon = check_positive("Adamax", "epsilon", epsilon)

    def _rule_state(self):
        return {"m": StateSpec(), "u": StateSpec()}

    def _update(self, params, grads, state, step, skip, learning_rate, options):
        self.backend.adamax_update(params, grads, state["m"], state["u"], step, learning_rate,
                                   beta_1=self.beta_1, beta_2=self.beta_2,
                                   epsilon=self.epsilon, weight_decay=self.weight_decay,
                                   skip=skip, options=options)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}
