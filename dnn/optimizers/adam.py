"""Keras 3's Adam and AdamW."""
from __future__ import annotations

from ..utils.validation import check_bool
from .base import Optimizer, StateSpec, check_fraction, check_positive


class Adam(Optimizer):
    """``Adam(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
    weight_decay=0.0, ...)``, Keras 3's formulation (bias correction folded into the step
    size, epsilon outside the root); ``amsgrad`` divides by the root of the largest
    second moment so far. Weight decay is decoupled, as Keras 3 (the same as AdamW); in
    the legacy formula (old files only) it is L2 added to the gradient."""

    name = "adam"
    rule = "adam"
    has_legacy = True
    decoupled = False  # decoupled weight decay in the legacy formula too

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, weight_decay=0.0, **kwargs):
        super().__init__(learning_rate, weight_decay, **kwargs)
        owner = type(self).__name__
        self.beta_1 = check_fraction(owner, "beta_1", beta_1)
        self.beta_2 = check_fraction(owner, "beta_2", beta_2)
        self.epsilon = check_positive(owner, "epsilon", epsilon)
        self.amsgrad = check_bool(amsgrad, f"{owner}: amsgrad")
        if self.amsgrad and self.legacy:
            raise ValueError(f"{owner}: amsgrad: formula 'legacy' (files written before "
                             f"Keras 3 parity) has no AMSGrad; got amsgrad=True")

    def _rule_state(self):
        state = {"m": StateSpec(), "v": StateSpec()}
        if self.amsgrad:
            state["v_hat"] = StateSpec()
        return state

    def _update(self, params, grads, state, step, skip, learning_rate, options):
        self.backend.adam_update(params, grads, state["m"], state["v"], step, learning_rate,
                                 beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon,
                                 weight_decay=self.weight_decay,
                                 decoupled_weight_decay=self.decoupled or not self.legacy,
                                 skip=skip, v_hat=state.get("v_hat"), options=options)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay, 0.004 by default (as Keras)."""

    name = "adamw"
    decoupled = True

    def __init__(self, learning_rate=1e-3, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False, **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay,
                         **kwargs)
