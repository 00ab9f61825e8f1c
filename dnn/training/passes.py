"""The passes of one step of a model: forward through the layers, the loss (with sample
weights and weight penalties), the backward pass, and the metric totals.

Functions of the model, used by the training loop (``dnn.training.trainer``) and by the
model's own ``predict`` and ``loss_and_gradients``; everything stays on the device. The
forward pass returns its tape, what each layer retained for the backward pass, so no
layer keeps a pass's arrays on itself.
"""
from __future__ import annotations

from ..layers.base import INFERENCE
from .epoch_plan import WHOLE
from .replica import LOCAL


def forward(model, xb, context=INFERENCE):
    """``(output, tape)``: the network's output for a batch, in the weight dtype (under
    a mixed policy the low-precision output is cast up, so that losses and metrics run
    in float32), and each layer's retained values."""
    out, tape = xb, []
    for layer in model.layers:
        out, retained = layer.forward(out, context)
        tape.append(retained)
    if model.mixed:
        out = model.backend.cast(out, out=_batch_buffer(model, xb.shape[0], "mixed_out",
                                                        model.dtype))
    return out, tape


def output(model, xb):
    """The network's inference output for a batch."""
    return forward(model, xb)[0]


def _batch_buffer(model, rows, tag, dtype, width=None):
    width = model.output_dim if width is None else width
    return model.buffers.get(rows, (tag, width), lambda r: model.backend.empty((r, width),
                                                                             dtype))


def output_and_loss(model, xb, yb, context=INFERENCE, weights=None, penalty=True):
    """``(output, loss, d loss / d output, tape)``: the loss a device scalar (the data
    loss, plus the weight penalties unless ``penalty`` is False), the gradient of the
    data loss in a batch buffer. ``weights``: per-sample weights (rows,), or None."""
    out, tape = forward(model, xb, context)
    loss, grad = model.loss(model.backend, out, yb, weights=weights,
                            grad_out=_batch_buffer(model, xb.shape[0], "loss_grad",
                                                   model.dtype))
    if penalty and model.weights.regularized:
        loss = _add_penalties(model, loss, with_gradients=False)
    return out, loss, grad, tape


def _add_penalties(model, loss, with_gradients):
    """The data loss plus every weight penalty, in a device scalar of the model's; with
    ``with_gradients`` the penalties' gradients are added to the weights' too."""
    be, total = model.backend, model.weights.penalty
    be.fill(total, 0)
    for param, grad, regularizer in model.weights.regularized:
        be.add_regularization(param, grad if with_gradients else None, regularizer.l1,
                              regularizer.l2, total)
    be.accumulate(total, loss, 1.0)
    return total


def loss_and_backward(model, batch, context, share=WHOLE, replica=LOCAL):
    """Forward, loss and backward of one batch ``(x, y)`` or ``(x, y, sample
    weights)``: fills the gradient buffer (weight penalties included) and returns
    ``(output, device loss)``, the loss with every penalty.

    ``share.scale`` multiplies the data loss's gradient (a rank's share of the global
    batch); the replica says whether this rank adds the penalties' gradients and is told
    when each layer's gradients are final (``after_layer(i)``, while the layers before
    it are still to run)."""
    xb, yb = batch[:2]
    weights = batch[2] if len(batch) > 2 else None
    out, loss, grad, tape = output_and_loss(model, xb, yb, context, weights, penalty=False)
    be = model.backend
    if share.scale is not None:
        be.multiply(grad, share.scale, out=grad)
    if model.mixed:
        grad = be.cast(grad, out=_batch_buffer(model, xb.shape[0], "mixed_grad",
                                               model.compute_dtype))
    regularized = bool(model.weights.regularized)
    total = model.weights.penalty
    if regularized:
        be.fill(total, 0)
    with_penalty_gradients, after_layer = replica.adds_penalty_gradients, replica.after_layer
    for i in range(len(model.layers) - 1, -1, -1):
        grad = model.layers[i].backward(grad, tape[i], need_dx=i > 0)
        for param, g, regularizer in model.weights.layer_penalties[i]:
            be.add_regularization(param, g if with_penalty_gradients else None,
                                  regularizer.l1, regularizer.l2, total)
        if after_layer is not None:
            after_layer(i)
    if regularized:
        be.accumulate(total, loss, 1.0)
        return out, total
    return out, loss


def update_metrics(model, out, yb, totals, weights=None):
    """Add this batch to each metric's device totals (``totals[i]``: its slots); the
    weighted metrics weight each row by ``weights`` (per-sample weights, or None)."""
    for metric, total in zip(model.metrics, totals):
        metric.update(model.backend, out, yb, total, weights if metric.weighted else None)


def logs(model, sums, n):
    """``{"loss": mean, metric: value}`` from host totals over ``n`` samples: ``sums[0]``
    the loss times rows, then each metric's slots."""
    result = {"loss": sums[0] / n}
    offset = 1
    for metric in model.metrics:
        result[metric.name] = metric.result(sums[offset:offset + metric.slots], n,
                                            model.output_dim)
        offset += metric.slots
    return result
