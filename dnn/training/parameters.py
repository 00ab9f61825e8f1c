"""A model's weights in flat device buffers, one view per weight.

Trainable weights live in one flat buffer and their gradients in another laid out alike,
so an optimizer step is one fused pass over the buffer (and its state is shaped like it).
Non-trainable weights (BatchNormalization's moving statistics, Normalization's mean and
variance) live in a third buffer the optimizer never touches. Under a mixed precision
policy the layers compute with a lower-precision copy of the trainable buffer, refreshed
after every update; gradients and the other buffers stay in the weight dtype.

Initial values are drawn on the host from the model's seed, in layer order, so a seed
gives the same network on every backend.
"""
from __future__ import annotations

import re

import numpy

from ..layers.base import LayerViews

_ALIGN = 16  # elements: each weight view starts on a 64-byte boundary (float32)


def _layout(shapes, total):
    """``([(offset, shape)], new total)`` for weights appended at ``total``."""
    slots = []
    for shape in shapes:
        slots.append((total, shape))
        total += -(-int(numpy.prod(shape)) // _ALIGN) * _ALIGN
    return slots, total


def _initial_values(layouts, n_params, n_state, seed, dtype):
    """Host buffers of the trainable and the non-trainable weights, drawn from ``seed``
    in layer order."""
    host_params = numpy.zeros(max(n_params, 1), dtype)
    host_state = numpy.zeros(max(n_state, 1), dtype)
    rng = numpy.random.default_rng(seed)
    for layer, params, state in layouts:
        values = layer.initial_values(rng, dtype)  # trainable, then state
        places = [(host_params, slot) for slot in params] + \
            [(host_state, slot) for slot in state]
        for (flat, (offset, _)), value in zip(places, values):
            flat[offset:offset + value.size] = value.ravel()
    return host_params, host_state


def _layer_names(layers):
    """Each layer's name, or as Keras names layers: its class in snake case, numbered
    per class after the first ("dense", "dense_1", ...)."""
    seen, names = {}, []
    for layer in layers:
        base = re.sub(r"(?<!^)(?=[A-Z])", "_", type(layer).__name__).lower()
        count = seen[base] = seen.get(base, -1) + 1
        names.append(layer.name or (base if count == 0 else f"{base}_{count}"))
    return names


class Parameters:
    """The weights of ``layers`` (already built) on ``backend``."""

    def __init__(self, backend, layers, seed, dtype, compute_dtype, buffers):
        self.backend = backend
        self.dtype, self.compute_dtype = dtype, compute_dtype
        layouts, n_params, n_state = [], 0, 0
        for layer in layers:
            params, n_params = _layout([s for _, s in layer.param_shapes], n_params)
            state, n_state = _layout([s for _, s in layer.state_shapes], n_state)
            layouts.append((layer, params, state))
        host_params, host_state = _initial_values(layouts, n_params, n_state, seed, dtype)
        be = backend
        self.params = be.asarray(host_params)
        self.grads = be.zeros(host_params.shape, dtype)
        self.state = be.asarray(host_state)
        self.compute = self.params if compute_dtype == dtype else \
            be.empty(host_params.shape, compute_dtype)
        self.refresh_compute()
        self.views = []  # (layer, name, view) in get_weights order: trainable, then state
        self.regularized = []  # (weight view, gradient view, Regularizer)
        # Per layer: its penalties (as above), and the [start, stop) of its gradients in
        # the flat buffer (layers in order, each after the last): what data-parallel
        # training reduces as soon as the backward pass has finished the layer.
        self.layer_penalties, self.grad_ranges = [], []
        # The step's weight penalty, then the data loss added: a device scalar.
        self.penalty = be.zeros((1,), dtype)
        # (path, offset, size) of each trainable weight, in buffer order: what an
        # optimizer treats weight by weight (per-weight clipnorm, weight decay exclusions).
        self.segments = []
        for layout, layer_name in zip(layouts, _layer_names(layers)):
            self._bind(layout, buffers)
            layer, params, _ = layout
            self.segments += [(f"{layer_name}/{name}", offset, int(numpy.prod(shape)))
                              for (name, _), (offset, shape) in zip(layer.param_shapes, params)]

    def _bind(self, layout, buffers):
        """Hand one layer its views, and note its penalties and gradient range."""
        be = self.backend
        layer, params, state = layout
        grads = [be.view(self.grads, o, s) for o, s in params]
        states = [be.view(self.state, o, s) for o, s in state]
        layer.bind(be, LayerViews([be.view(self.compute, o, s) for o, s in params], grads,
                                  states), (self.dtype, self.compute_dtype), buffers)
        masters = [be.view(self.params, o, s) for o, s in params]
        names = [name for name, _ in layer.param_shapes + layer.state_shapes]
        self.views += [(layer, name, view) for name, view in zip(names, masters + states)]
        penalties = [(masters[i], grads[i], reg) for i, reg in layer.regularized()]
        self.layer_penalties.append(penalties)
        self.regularized += penalties
        self.grad_ranges.append((params[0][0], params[-1][0] + int(numpy.prod(
            params[-1][1]))) if params else None)

    def refresh_compute(self):
        """Refresh the low-precision copy of the trainable weights (mixed policy only)."""
        if self.compute is not self.params:
            self.backend.cast(self.params, out=self.compute)

    def get(self):
        """NumPy copies of every weight, trainable then non-trainable per layer."""
        return [self.backend.to_numpy(view).copy() for _, _, view in self.views]

    def set(self, weights):
        targets = self.views
        weights = list(weights)
        if len(weights) != len(targets):
            raise ValueError(f"set_weights: expected {len(targets)} arrays "
                             f"({', '.join(str(tuple(v.shape)) for _, _, v in targets)}); "
                             f"got {len(weights)}")
        host = []
        for i, ((layer, name, view), w) in enumerate(zip(targets, weights)):
            w = numpy.asarray(w)
            if w.shape != tuple(view.shape):
                raise ValueError(f"set_weights: weights[{i}] ({layer.describe()} {name}): "
                                 f"expected shape {tuple(view.shape)}; got {w.shape}")
            if w.dtype.kind not in "biuf":
                raise TypeError(f"set_weights: weights[{i}]: expected numeric; "
                                f"got dtype {w.dtype}")
            host.append(w)
        for (_, _, view), w in zip(targets, host):
            self.backend.copy(self.backend.asarray(w, dtype=self.dtype), out=view)
        self.refresh_compute()
