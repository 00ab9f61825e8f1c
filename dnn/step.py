"""The math of one step of a model: forward through the layers, the loss (with sample
weights and weight penalties), the backward pass, and the metric totals.

Functions of the model, used by the training loop (``dnn.trainer``) and by the model's
own ``predict`` and ``loss_and_gradients``; everything stays on the device.
"""
from __future__ import annotations


def output(model, xb, training=False, step=0):
    """The network's output for a batch, in the weight dtype: under a mixed policy the
    low-precision output is cast up so that losses and metrics run in float32."""
    out = xb
    for layer in model.layers:
        out = layer.forward(out, training, step)
    if model.mixed:
        out = model.backend.cast(out, out=_batch_buffer(model, xb.shape[0], "mixed_out",
                                                        model.dtype))
    return out


def _batch_buffer(model, rows, tag, dtype, width=None):
    width = model.output_dim if width is None else width
    return model.buffers.get(rows, (tag, width), lambda r: model.backend.empty((r, width),
                                                                             dtype))


def output_and_loss(model, xb, yb, training=False, step=0, weights=None, penalty=True):
    """``(output, loss, d loss / d output)``: the loss a device scalar (the data loss,
    plus the weight penalties unless ``penalty`` is False), the gradient of the data
    loss in a batch buffer. ``weights``: per-sample weights (rows,), or None."""
    out = output(model, xb, training, step)
    loss, grad = model.loss(model.backend, out, yb, weights=weights,
                            grad_out=_batch_buffer(model, xb.shape[0], "loss_grad",
                                                   model.dtype))
    if penalty and model.weights.regularized:
        loss = _add_penalties(model, loss, with_gradients=False)
    return out, loss, grad


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


def loss_and_backward(model, xb, yb, training, step, weights=None, grad_scale=None,
                      penalty_gradients=True, after_layer=None):
    """Forward, loss and backward of one batch: fills the gradient buffer (weight
    penalties included) and returns ``(output, device loss)``, the loss with every
    penalty.

    For data-parallel training: ``grad_scale`` multiplies the data loss's gradient (a
    rank's share of the global batch), ``penalty_gradients`` False leaves the
    penalties' gradients to another rank, and ``after_layer(i)`` is called once layer
    i's gradients (its penalties' included) are final, while the layers before it are
    still to run."""
    out, loss, grad = output_and_loss(model, xb, yb, training, step, weights, penalty=False)
    be = model.backend
    if grad_scale is not None:
        be.multiply(grad, grad_scale, out=grad)
    if model.mixed:
        grad = be.cast(grad, out=_batch_buffer(model, xb.shape[0], "mixed_grad",
                                               model.compute_dtype))
    regularized = bool(model.weights.regularized)
    total = model.weights.penalty
    if regularized:
        be.fill(total, 0)
    for i in range(len(model.layers) - 1, -1, -1):
        grad = model.layers[i].backward(grad, need_dx=i > 0)
        for param, g, regularizer in model.weights.layer_penalties[i]:
            be.add_regularization(param, g if penalty_gradients else None, regularizer.l1,
                                  regularizer.l2, total)
        if after_layer is not None:
            after_layer(i)
    if regularized:
        be.accumulate(total, loss, 1.0)
        return out, total
    return out, loss


def update_metrics(model, out, yb, totals):
    """Add this batch to each metric's device totals (``totals[i]``: its slots)."""
    for metric, total in zip(model.metrics, totals):
        metric.update(model.backend, out, yb, total)


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
