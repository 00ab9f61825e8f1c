"""Keras 3's Adagrad."""
from __future__ import annotations

from .base import Optimizer, StateSpec, check_positive


class Adagrad(Optimizer):
    """``Adagrad(learning_rate=1e-3, initial_accumulator_value=0.1, epsilon=1e-7,
    weight_decay=0.0, ...)``: ``acc += g^2; w -= lr g / sqrt(acc + eps)`` (Keras 3)."""

    name = "adagrad"
    rule = "adagrad"

    def __init__(self, learning_rate=1e-3, initial_accumulator_value=0.1, epsilon=1e-7,
                 weight_decay=0.0, **kwargs):
        super().__init__(learning_rate, weight_decay, **kwargs)
        self.initial_accumulator_value = check_positive(
            "Adagrad", "initial_accumulator_value", initial_accumulator_value, allow_zero=True)
        self.epsilon = check_positive("Adagrad", "epsilon", epsilon)

    def _rule_state(self):
        return {"accumulator": StateSpec(fill=self.initial_accumulator_value)}

    def _update(self, params, grads, state, step, skip, learning_rate, options):
        self.backend.adagrad_update(params, grads, state["accumulator"], learning_rate,
                                    epsilon=self.epsilon, weight_decay=self.weight_decay,
                                    skip=skip, options=options)

    def get_config(self):
        return {**super().get_config(),
                "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}
