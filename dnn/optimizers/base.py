"""The base of every optimizer: Keras 3's ``BaseOptimizer`` over the model's flat buffers.

An update is what Keras 3's ``apply`` does, in the same order: gradient accumulation
(``gradient_accumulation_steps``), clipping (``clipnorm`` per weight, ``global_clipnorm``
of all of them, or ``clipvalue``), decoupled weight decay (``p -= lr * weight_decay * p``
for every optimizer, less the weights named by ``exclude_from_weight_decay``), the
optimizer's own rule, and the weights' moving average (``use_ema``). It is one backend
call, one fused pass over the buffers; per-weight clipping adds a two-launch reduction
before it. The math is ``dnn.kernels.reference.apply``.

The formula is part of an optimizer's config: ``formula="keras3"`` (every optimizer made
now) or ``"legacy"``, the updates dnn computed before it matched Keras 3: momentum SGD in
PyTorch's form, RMSprop with epsilon outside the root, L2 weight decay added to the
gradient (AdamW aside), and ``clipnorm`` as the joint norm. A config without the field
was written before it existed, so it means "legacy": a model file resumes with the
formula it trained with.
"""
from __future__ import annotations

import dataclasses
import re

import numpy

from ..backends.base import UpdateOptions
from ..utils.validation import (check_bool, check_int_at_least, check_number_in,
                                check_positive_number)
from . import schedules
from .schedules import LearningRateSchedule

KERAS3, LEGACY = "keras3", "legacy"
FORMULAS = (KERAS3, LEGACY)


def check_positive(owner, name, value, allow_zero=False):
    return check_positive_number(value, f"{owner}: {name}", allow_zero)


def check_fraction(owner, name, value):
    return check_number_in(value, f"{owner}: {name}", 0, 1, "[)")


def _optional_positive(owner, name, value):
    return None if value is None else check_positive(owner, name, value)


@dataclasses.dataclass(frozen=True)
class StateSpec:
    """One state buffer: shaped like the parameters (``shape`` None) or of its own shape,
    in the parameters' dtype unless ``dtype`` says, filled with ``fill``."""

    fill: float = 0.0
    shape: tuple | None = None
    dtype: str | None = None


class Optimizer:
    """Keras 3's optimizer arguments, common to every optimizer:

    ``weight_decay``: decoupled, ``p -= lr * weight_decay * p`` before each update.
    ``clipnorm``: each weight's gradient scaled to a norm of at most this;
    ``global_clipnorm``: all of them, by their joint norm; ``clipvalue``: each element
    clamped. At most one of the three, as Keras.
    ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``: a moving average of the
    weights, ``average = m * average + (1 - m) * w`` after every update; every
    ``ema_overwrite_frequency`` updates the weights take its value, and ``fit`` gives
    them its value when it ends (``finalize_variable_values``).
    ``gradient_accumulation_steps``: k >= 2 applies the mean gradient of k steps every k
    steps (schedules still count every step, as Keras).
    ``exclude_from_weight_decay``: see the method of that name.
    ``formula``: "keras3", or "legacy" to resume files written before it (see the
    module docstring).
    """

    name = "optimizer"
    rule = None  # the update's name in kernels.reference.RULES
    has_legacy = False  # whether files written before Keras 3 parity can hold it
    # Options of Keras' apply that files of the legacy formula never had.
    _KERAS3_ONLY = ("global_clipnorm", "use_ema", "gradient_accumulation_steps",
                    "exclude_from_weight_decay")

    def __init__(self, learning_rate, weight_decay=0.0, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, gradient_accumulation_steps=None,
                 exclude_from_weight_decay=None, formula=KERAS3):
        owner = type(self).__name__
        if isinstance(learning_rate, dict):
            learning_rate = schedules.deserialize(learning_rate)
        if not isinstance(learning_rate, LearningRateSchedule):
            learning_rate = check_positive(owner, "learning_rate", learning_rate)
        self._learning_rate = learning_rate
        if formula not in FORMULAS:
            raise ValueError(f"{owner}: formula: expected one of {', '.join(FORMULAS)}; "
                             f"got {formula!r}")
        self.formula = formula
        self.weight_decay = check_positive(owner, "weight_decay", weight_decay or 0.0,
                                           allow_zero=True)
        self.clipnorm = _optional_positive(owner, "clipnorm", clipnorm)
        self.clipvalue = _optional_positive(owner, "clipvalue", clipvalue)
        self.global_clipnorm = _optional_positive(owner, "global_clipnorm", global_clipnorm)
        self.use_ema = check_bool(use_ema, f"{owner}: use_ema")
        self.ema_momentum = check_number_in(ema_momentum, f"{owner}: ema_momentum", 0, 1)
        self.ema_overwrite_frequency = None if not ema_overwrite_frequency else \
            check_int_at_least(ema_overwrite_frequency, f"{owner}: ema_overwrite_frequency", 1)
        self.gradient_accumulation_steps = None if gradient_accumulation_steps is None else \
            check_int_at_least(gradient_accumulation_steps,
                               f"{owner}: gradient_accumulation_steps", 2)
        self._excluded = None
        if exclude_from_weight_decay is not None:
            self.exclude_from_weight_decay(var_names=exclude_from_weight_decay)
        self._check_formula_options(owner)
        self.backend = None
        self.dtype = None
        self.state = {}
        # int64 (1,) on the device: steps taken. apply_gradients alone advances it.
        self.iterations = None
        # (1,) on the device: the rate of the next update, which a captured step reads.
        self.learning_rate_buffer = None
        self._encoded_schedule = None  # a schedule's encoding, float64 on the device
        self._options = None  # UpdateOptions, when the update needs more than its rule

    def _check_formula_options(self, owner):
        if self.legacy and not self.has_legacy:
            raise ValueError(f"{owner}: formula: expected 'keras3' (no file written before "
                             f"Keras 3 parity holds a {owner}); got 'legacy'")
        if self.legacy:
            given = [name for name in self._KERAS3_ONLY
                     if getattr(self, name if name != "exclude_from_weight_decay"
                                else "_excluded")]
            if given:
                raise ValueError(f"{owner}: formula 'legacy' (files written before Keras 3 "
                                 f"parity) takes none of {', '.join(self._KERAS3_ONLY)}; got "
                                 f"{', '.join(given)}")
            return
        clips = {name: getattr(self, name) for name in ("clipnorm", "clipvalue",
                                                        "global_clipnorm")}
        if sum(value is not None for value in clips.values()) > 1:
            given = ", ".join(f"{k}={v!r}" for k, v in clips.items())
            raise ValueError(f"{owner}: expected at most one of clipnorm, clipvalue and "
                             f"global_clipnorm (as Keras); got {given}")

    @property
    def legacy(self):
        """Whether this optimizer computes the formulas of files written before Keras 3
        parity (see the module docstring)."""
        return self.formula == LEGACY

    @property
    def capturable(self):
        """Whether an update can live in a captured CUDA graph: all but the legacy joint
        clip norm, whose reduction allocates."""
        return not (self.legacy and self.clipnorm is not None)

    # ------------------------------------------------------------------ weight decay
    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Leave weights out of weight decay, as Keras: ``var_names`` is a list of
        strings, and a weight whose path matches any of them (``re.search``, as Keras
        matches a variable's name) keeps its value. A path is ``layer/weight``: the
        layer's ``name``, or else its class in snake case numbered per class in the
        model as Keras names layers ("dense", "dense_1", "batch_normalization", ...),
        then the weight ("kernel", "bias", "gamma", "beta"). So ``["bias"]`` leaves out
        every bias, ``["dense_1/"]`` the second Dense layer. Call it before the
        optimizer is built (before ``compile`` of a built model), as Keras requires."""
        owner = type(self).__name__
        if self.__dict__.get("backend") is not None:
            raise ValueError(f"{owner}: exclude_from_weight_decay() can only be configured "
                             f"before the optimizer is built (call it before compile)")
        if var_list:
            raise TypeError(f"{owner}: exclude_from_weight_decay: var_list: dnn's weights are "
                            f"views of one flat buffer, not variables; name them with "
                            f"var_names= instead (matched in paths like 'dense_1/bias')")
        names = [var_names] if isinstance(var_names, str) else list(var_names or [])
        bad = [n for n in names if not isinstance(n, str) or not n]
        if bad:
            raise ValueError(f"{owner}: exclude_from_weight_decay: var_names: expected "
                             f"non-empty strings; got {bad[0]!r}")
        self._excluded = names or None

    def _decays(self, path):
        return self._excluded is None or \
            re.search("|".join(set(self._excluded)), path) is None

    # -------------------------------------------------------------------- building
    def state_specs(self):
        """``{name: StateSpec}`` of the state this optimizer keeps: its rule's, then
        Keras' apply's (the gradient accumulator, the moving average)."""
        specs = dict(self._rule_state())
        if self.gradient_accumulation_steps:
            specs["gradient_accumulator"] = StateSpec()
        if self.use_ema:
            specs["average"] = StateSpec()
        return specs

    def _rule_state(self):
        """The state of this optimizer's rule: ``{name: StateSpec}``."""
        return {}

    @property
    def state_names(self):
        return tuple(self.state_specs())

    def _allocate_state(self, size):
        be = self.backend
        state = {}
        for name, spec in self.state_specs().items():
            buffer = be.zeros(spec.shape or (size,), spec.dtype or self.dtype)
            if spec.fill:
                be.fill(buffer, spec.fill)
            state[name] = buffer
        return state

    def build(self, backend, size, dtype, weights=None):
        """Allocate the state for a flat buffer of ``size`` elements. ``weights``: the
        trainable weights in it, ``[(path, offset, size)]`` in buffer order (see
        ``exclude_from_weight_decay``); without them the buffer is one weight."""
        self.backend = backend
        self.dtype = dtype
        self.state = self._allocate_state(size)
        self.iterations = backend.zeros((1,), "int64")
        self.learning_rate_buffer = backend.zeros((1,), dtype)
        if self.scheduled:
            self._encoded_schedule = backend.asarray(self._learning_rate.encode())
        else:
            backend.fill(self.learning_rate_buffer, self._learning_rate)
        self._options = None if self.legacy else self._update_options(size, weights or [])

    def _update_options(self, size, weights):
        """The ``UpdateOptions`` of Keras' apply for this optimizer, or None when the
        update is its rule alone (with a uniform weight decay)."""
        be, dtype = self.backend, self.dtype
        weights = weights or [("", 0, size)]
        decays = [self._decays(path) for path, _, _ in weights]
        by_weight = bool(self.weight_decay) and not all(decays)
        clips = self.clipnorm is not None or self.global_clipnorm is not None
        if not (clips or by_weight or self.clipvalue is not None or self.use_ema
                or self.gradient_accumulation_steps):
            return None
        segments = None
        if clips or by_weight:
            per_weight = by_weight or self.clipnorm is not None
            bounds = [offset for _, offset, _ in weights] + [size] if per_weight else [0, size]
            segments = be.weight_segments(bounds, dtype)
        return UpdateOptions(
            step=self.iterations, accumulator=self.state.get("gradient_accumulator"),
            accumulation_steps=self.gradient_accumulation_steps or 1,
            clipvalue=self.clipvalue,
            clip_scales=be.zeros((segments.count,), dtype) if clips else None,
            segments=segments,
            weight_decay=be.asarray(numpy.array(decays, dtype) * self.weight_decay)
            if by_weight else None,
            ema=self.state.get("average"), ema_momentum=self.ema_momentum,
            ema_overwrite_frequency=self.ema_overwrite_frequency or 0)

    # --------------------------------------------------------------- learning rate
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
        self._learning_rate = check_positive(type(self).__name__, "learning_rate", value)
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

    # --------------------------------------------------------------------- updates
    def apply_gradients(self, params, grads, skip=None):
        """One update of ``params`` in place from ``grads`` (which it may overwrite),
        counting the step; nothing changes, the count included, when the device flag
        ``skip`` is set (see ``Backend.guard_finite``)."""
        be = self.backend
        if self.legacy:
            return self._apply_legacy(params, grads, skip)
        be.increment_step(self.iterations, skip=skip)
        if self._encoded_schedule is not None:
            be.scheduled_rate(self._encoded_schedule, self.iterations, self.learning_rate_buffer)
        if self.clipnorm is not None or self.global_clipnorm is not None:
            be.clip_scales(grads, self.clipnorm or self.global_clipnorm,
                           self.clipnorm is not None, self._options)
        self._update(params, grads, self.state, self.iterations, skip,
                     self.learning_rate_buffer, self._options)

    def _apply_legacy(self, params, grads, skip):
        """The legacy formula's clipping (clipvalue, then the joint norm as clipnorm),
        kept only to resume old files."""
        be = self.backend
        if self.clipvalue is not None:
            be.clip_by_value(grads, self.clipvalue)
        if self.clipnorm is not None:
            be.clip_by_global_norm(grads, self.clipnorm)
        be.increment_step(self.iterations, skip=skip)
        if self._encoded_schedule is not None:
            be.scheduled_rate(self._encoded_schedule, self.iterations, self.learning_rate_buffer)
        self._update(params, grads, self.state, self.iterations, skip,
                     self.learning_rate_buffer, None)

    def _update(self, params, grads, state, step, skip, learning_rate, options):
        """One update of ``params`` from ``grads`` with the state buffers ``state``, at
        the 1-based step held in the device array ``step``, at the rate held in the
        device array ``learning_rate``, with Keras' apply ``options`` (or None): one
        backend call."""
        raise NotImplementedError

    def finalize_variable_values(self, params):
        """Give the weights their moving average when ``use_ema`` is set (Keras calls
        this when ``fit`` ends; so does dnn's)."""
        if self.use_ema and self.backend is not None:
            self.backend.copy(self.state["average"], out=params)

    def warmup(self):
        """Run one update on scratch buffers of the smallest size that takes the
        backend's fused path, with the same kind of options, so that compiling it
        happens outside any timing."""
        be, n = self.backend, self.backend.fused_update_min_size
        scratch = self._allocate_state(n)
        step = be.asarray(numpy.ones(1, numpy.int64))
        learning_rate = be.zeros((1,), self.dtype)
        if self._encoded_schedule is not None:
            be.scheduled_rate(self._encoded_schedule, step, learning_rate)
        options, grads = None, be.zeros((n,), self.dtype)
        if self._options is not None:  # the same features, on one segment
            clips = self._options.clip_scales is not None
            options = dataclasses.replace(
                self._options, step=step, accumulator=scratch.get("gradient_accumulator"),
                ema=scratch.get("average"),
                segments=None if self._options.segments is None
                else be.weight_segments([0, n], self.dtype),
                clip_scales=be.zeros((1,), self.dtype) if clips else None,
                weight_decay=be.zeros((1,), self.dtype)
                if self._options.weight_decay is not None else None)
            if clips:
                be.clip_scales(grads, 1.0, self.clipnorm is not None, options)
        self._update(be.zeros((n,), self.dtype), grads, scratch, step, None, learning_rate,
                     options)

    # ------------------------------------------------------------------- the state
    def get_config(self):
        rate = schedules.serialize(self._learning_rate) if self.scheduled \
            else self._learning_rate
        return {"name": self.name, "learning_rate": rate, "weight_decay": self.weight_decay,
                "clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm,
                "clipvalue": self.clipvalue, "use_ema": self.use_ema,
                "ema_momentum": self.ema_momentum,
                "ema_overwrite_frequency": self.ema_overwrite_frequency,
                "gradient_accumulation_steps": self.gradient_accumulation_steps,
                "exclude_from_weight_decay": self._excluded, "formula": self.formula}

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
