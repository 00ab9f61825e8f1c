"""Keras 3's Lion."""
from __future__ import annotations

from ..utils.validation import check_number_in
from .base import Optimizer, StateSpec, check_fraction


class Lion(Optimizer):
    """``Lion(learning_rate=1e-3, beta_1=0.9, beta_2=0.99, weight_decay=0.0, ...)``:
    ``w -= lr sign(beta_1 m + (1 - beta_1) g)``, then ``m = beta_2 m + (1 - beta_2) g``
    (Keras 3). Its steps all have the size of the rate: use a rate 3-10 times smaller
    than AdamW's."""

    name = "lion"
    rule = "lion"

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.99, weight_decay=0.0,
                 **kwargs):
        super().__init__(learning_rate, weight_decay, **kwargs)
        self.beta_1 = check_number_in(beta_1, "Lion: beta_1", 0, 1, "(]")  # as Keras
        self.beta_2 = check_fraction("Lion", "beta_2", beta_2)

    def _rule_state(self):
        return {"momentum": StateSpec()}

    def _update(self, params, grads, state, step, skip, learning_rate, options):
        self.backend.lion_update(params, grads, state["momentum"], learning_rate,
                                 beta_1=self.beta_1, beta_2=self.beta_2,
                                 weight_decay=self.weight_decay, skip=skip, options=options)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2}
