"""Keras 3's Nadam."""
from __future__ import annotations

from .base import Optimizer, StateSpec, check_fraction, check_positive


class Nadam(Optimizer):
    """``Nadam(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
    weight_decay=0.0, ...)``: Adam with Nesterov momentum and Keras 3's momentum schedule
    ``u_t = beta_1 (1 - 0.5 * 0.96^t)``, whose running product is its state
    ``u_product`` (float64, see ``kernels.reference.nadam_step``)."""

    name = "nadam"
    rule = "nadam"

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 weight_decay=0.0, **kwargs):
        super().__init__(learning_rate, weight_decay, **kwargs)
        self.beta_1 = check_fraction("Nadam", "beta_1", beta_1)
        self.beta_2 = check_fraction("Nadam", "beta_2", beta_2)
        self.epsilon = check_positive("Nadam", "epsilon", epsilon)

    def _rule_state(self):
        return {"m": StateSpec(), "v": StateSpec(),
                "u_product": StateSpec(fill=1.0, shape=(2,), dtype="float64")}

    def _update(self, params, grads, state, step, skip, learning_rate, options):
        self.backend.nadam_update(params, grads, state["m"], state["v"], state["u_product"],
                                  step, learning_rate, beta_1=self.beta_1, beta_2=self.beta_2,
                                  epsilon=self.epsilon, weight_decay=self.weight_decay,
                                  skip=skip, options=options)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}
