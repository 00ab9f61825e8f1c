"""Float64 central-difference checks of model.loss_and_gradients: every layer,
activation and loss."""
import numpy
import pytest

import dnn
from dnn.layers import Activation, Dense, Dropout

ACTS = ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "softmax"]


def numeric_gradients(model, x, y, training=False, eps=1e-5):
    weights = model.get_weights()
    grads = []
    for i, w in enumerate(weights):
        g = numpy.zeros_like(w)
        for idx in numpy.ndindex(*w.shape):
            for sign in (+1, -1):
                trial = [v.copy() for v in weights]
                trial[i][idx] += sign * eps
                model.set_weights(trial)
                loss, _ = model.loss_and_gradients(x, y, training=training)
                g[idx] += sign * loss / (2 * eps)
        grads.append(g)
    model.set_weights(weights)
    return grads


def assert_gradients_match(model, x, y, training=False):
    _, analytic = model.loss_and_gradients(x, y, training=training)
    numeric = numeric_gradients(model, x, y, training=training)
    for a, n in zip(analytic, numeric):
        # Relative error of the whole array (CS231n's measure): per-element ratios blow
        # up on near-zero entries where the difference quotient is all round-off.
        rel = numpy.linalg.norm(a - n) / max(numpy.linalg.norm(a) + numpy.linalg.norm(n), 1e-12)
        assert rel < 1e-6, (rel, a, n)
        assert numpy.abs(a).max() > 0 or numpy.abs(n).max() < 1e-9


def data(rng, n=6, d=3):
    x = rng.normal(0, 1, (n, d))
    return x


@pytest.mark.parametrize("act", ACTS)
def test_hidden_activation_gradients(use, rng, act):
    x = data(rng)
    y = rng.normal(size=(6, 2))
    model = dnn.Sequential([Dense(5, act), Dense(2)], input_dim=3, seed=3, dtype="float64")
    model.compile(loss="mse", optimizer="sgd")
    assert_gradients_match(model, x, y)


@pytest.mark.parametrize("loss,out_act,make_y", [
    ("mse", "tanh", lambda r: r.normal(size=(6, 2))),
    ("mse", "linear", lambda r: r.normal(size=(6, 2))),
    ("binary_crossentropy", "sigmoid", lambda r: r.integers(0, 2, (6, 2))),
    ("categorical_crossentropy", "softmax",
     lambda r: numpy.eye(2)[r.integers(0, 2, 6)]),
    ("sparse_categorical_crossentropy", "softmax", lambda r: r.integers(0, 2, 6)),
])
def test_loss_gradients(use, rng, loss, out_act, make_y):
    x = data(rng)
    model = dnn.Sequential([Dense(4, "tanh"), Dense(2, out_act)], input_dim=3, seed=1,
                           dtype="float64")
    model.compile(loss=loss, optimizer="adam")
    assert_gradients_match(model, x, make_y(rng))


@pytest.mark.parametrize("loss_obj,make_y", [
    (lambda: dnn.losses.BinaryCrossentropy(from_logits=True), lambda r: r.integers(0, 2, (6, 3))),
    (lambda: dnn.losses.CategoricalCrossentropy(from_logits=True),
     lambda r: numpy.eye(3)[r.integers(0, 3, 6)]),
])
def test_from_logits_losses(use, rng, loss_obj, make_y):
    model = dnn.Sequential([Dense(4, "relu"), Dense(3)], input_dim=3, seed=2, dtype="float64")
    model.compile(loss=loss_obj(), optimizer="adam")
    assert_gradients_match(model, data(rng), make_y(rng))


def test_dropout_and_activation_layer_gradients(use, rng):
    model = dnn.Sequential([Dense(6), Activation("tanh"), Dropout(0.4), Dense(1, "sigmoid")],
                           input_dim=3, seed=4, dtype="float64")
    model.compile(loss="binary_crossentropy", optimizer="adam")
    y = rng.integers(0, 2, 6)
    assert_gradients_match(model, data(rng), y, training=True)
    # the mask really drops units in training and is the identity at inference
    l_train, _ = model.loss_and_gradients(data(rng), y, training=True)
    l_eval, _ = model.loss_and_gradients(data(rng), y, training=False)
    assert l_train != l_eval


def test_deep_stack_gradients(use, rng):
    model = dnn.Sequential([Dense(4, "relu"), Dense(6, "gelu"), Dense(6, "sigmoid"),
                            Dense(4, "leaky_relu"), Dense(3, "softmax")],
                           input_dim=3, seed=5, dtype="float64")
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    assert_gradients_match(model, data(rng), rng.integers(0, 3, 6))
