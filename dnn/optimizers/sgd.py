"""Keras 3's SGD."""
from __future__ import annotations

from .base import Optimizer, StateSpec, check_fraction


class SGD(Optimizer):
    """``SGD(learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, ...)``
    (and ``Optimizer``'s arguments), as Keras 3: each step's rate is folded into the
    momentum buffer, ``b = m b - lr g; w += b`` (Nesterov: ``w += m b - lr g``), so a
    schedule or a changed rate acts as it does in Keras. The legacy formula (old files
    only) is PyTorch's ``v = m v + g; w -= lr v``."""

    name = "sgd"
    rule = "sgd"
    has_legacy = True

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0,
                 **kwargs):
        super().__init__(learning_rate, weight_decay, **kwargs)
        self.momentum = check_fraction("SGD", "momentum", momentum)
        if nesterov and not self.momentum:
            raise ValueError(f"SGD: nesterov: expected momentum > 0 with nesterov=True; "
                             f"got momentum={momentum!r}")
        self.nesterov = bool(nesterov)

    def _rule_state(self):
        if not self.momentum:
            return {}
        return {"velocity" if self.legacy else "momentum": StateSpec()}

    def _update(self, params, grads, state, step, skip, learning_rate, options):
        if self.legacy:
            self.backend.sgd_legacy_update(params, grads, state.get("velocity"), learning_rate,
                                           self.momentum, self.nesterov, self.weight_decay,
                                           skip)
            return
        self.backend.sgd_update(params, grads, state.get("momentum"), learning_rate,
                                momentum=self.momentum, nesterov=self.nesterov,
                                weight_decay=self.weight_decay, skip=skip, options=options)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}
