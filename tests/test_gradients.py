"""Float64 central-difference checks of model.loss_and_gradients: every layer,
activation and loss."""
import numpy
import pytest

import dnn
from dnn.layers import (Activation, BatchNormalization, Dense, Dropout, LayerNormalization,
                        Normalization)

ACTS = ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "softmax"]


def trainable_indices(model):
    """Positions in get_weights of the trainable weights (each layer's come first)."""
    out, i = [], 0
    for layer in model.layers:
        out += range(i, i + len(layer.param_shapes))
        i += len(layer.param_shapes) + len(layer.state_shapes)
    return out


def numeric_gradients(model, x, y, training=False, eps=1e-5, **kw):
    weights = model.get_weights()
    grads = []
    for i in trainable_indices(model):
        w = weights[i]
        g = numpy.zeros_like(w)
        for idx in numpy.ndindex(*w.shape):
            for sign in (+1, -1):
                trial = [v.copy() for v in weights]
                trial[i][idx] += sign * eps
                model.set_weights(trial)
                loss, _ = model.loss_and_gradients(x, y, training=training, **kw)
                g[idx] += sign * loss / (2 * eps)
        grads.append(g)
    model.set_weights(weights)
    return grads


def assert_gradients_match(model, x, y, training=False, **kw):
    _, analytic = model.loss_and_gradients(x, y, training=training, **kw)
    numeric = numeric_gradients(model, x, y, training=training, **kw)
    assert len(analytic) == len(numeric)
    for a, n in zip(analytic, numeric):
        # Relative error of the whole array (CS231n's measure): per-element ratios blow
        # up on near-zero entries where the difference quotient is all round-off.
        if not numpy.abs(a).any():
            # An exactly-zero gradient (MAE's bias when signs balance) leaves only the
            # difference quotient's round-off to compare.
            assert numpy.abs(n).max() < 1e-9, n
            continue
        rel = numpy.linalg.norm(a - n) / (numpy.linalg.norm(a) + numpy.linalg.norm(n))
        assert rel < 1e-6, (rel, a, n)


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


# ---------------------------------------------------- the deep-MLP layers and options
def test_batch_normalization_gradients_through_the_batch_statistics(use, rng):
    x = data(rng, n=7, d=3) * 3 + 1
    y = rng.normal(size=(7, 2))
    model = dnn.Sequential([Dense(4, "tanh"), BatchNormalization(), Dense(2)], input_dim=3,
                           seed=4, dtype="float64")
    model.set_weights([w + rng.normal(0, 0.3, w.shape) if w.ndim else w
                       for w in model.get_weights()])  # gamma, beta away from 1, 0
    model.compile(loss="mse", optimizer="sgd")
    assert_gradients_match(model, x, y, training=True)
    assert_gradients_match(model, x, y, training=False)  # moving statistics: an affine map


def test_layer_normalization_gradients(use, rng):
    x = data(rng, n=5, d=4)
    y = rng.normal(size=(5, 3))
    model = dnn.Sequential([LayerNormalization(input_dim=4), Dense(6, "gelu"),
                            LayerNormalization(), Dense(3)], seed=5, dtype="float64")
    model.set_weights([w + rng.normal(0, 0.3, w.shape) for w in model.get_weights()])
    model.compile(loss="mse", optimizer="sgd")
    assert_gradients_match(model, x, y)


def test_normalization_gradients_reach_the_layers_before_it(use, rng):
    x = data(rng)
    y = rng.normal(size=(6, 2))
    norm = Normalization(mean=[0.5, -1.0, 2.0, 0.0, 1.0], variance=[4.0, 0.25, 1.0, 9.0, 0.5])
    model = dnn.Sequential([Dense(5, "tanh"), norm, Dense(2)], input_dim=3, seed=6,
                           dtype="float64")
    model.compile(loss="mse", optimizer="sgd")
    assert_gradients_match(model, x, y)


@pytest.mark.parametrize("kernel_reg,bias_reg", [("l2", None), ("l1", "l2"),
                                                 (dnn.regularizers.L1L2(0.01, 0.02), "l1")])
def test_weight_penalties_are_in_the_loss_and_its_gradient(use, rng, kernel_reg, bias_reg):
    x = data(rng)
    y = rng.integers(0, 3, 6)
    model = dnn.Sequential([Dense(5, "relu", kernel_regularizer=kernel_reg,
                                  bias_regularizer=bias_reg, bias_initializer="random_normal"),
                            Dense(3, "softmax", kernel_regularizer="l2")],
                           input_dim=3, seed=7, dtype="float64")
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    assert_gradients_match(model, x, y)


@pytest.mark.parametrize("loss,out_act,make_y", [
    ("mae", "linear", lambda r: r.normal(size=(6, 2))),
    (dnn.losses.Huber(delta=0.5), "linear", lambda r: r.normal(size=(6, 2))),
    (dnn.losses.BinaryCrossentropy(label_smoothing=0.2), "sigmoid",
     lambda r: r.integers(0, 2, (6, 2))),
    (dnn.losses.CategoricalCrossentropy(label_smoothing=0.1), "softmax",
     lambda r: numpy.eye(3)[r.integers(0, 3, 6)]),
    (dnn.losses.SparseCategoricalCrossentropy(label_smoothing=0.1), "softmax",
     lambda r: r.integers(0, 3, 6)),
])
@pytest.mark.parametrize("weighted", [False, True])
def test_new_losses_and_sample_weights(use, rng, loss, out_act, make_y, weighted):
    x = data(rng)
    y = make_y(rng)
    units = y.shape[1] if y.ndim == 2 else 3
    model = dnn.Sequential([Dense(4, "tanh"), Dense(units, out_act)], input_dim=3, seed=8,
                           dtype="float64")
    model.compile(loss=loss, optimizer="sgd")
    weights = rng.uniform(0, 2, 6) if weighted else None
    assert_gradients_match(model, x, y, sample_weight=weights)


# ------------------------------------------------ issue 19: residual blocks and options
def test_residual_block_gradients(use, rng):
    from dnn.layers import Residual

    x = data(rng, n=7, d=3)
    y = rng.integers(0, 3, 7)
    model = dnn.Sequential([
        Dense(4, "tanh"),
        Residual([Dense(4, "relu"), Dropout(0.3), Dense(4)], activation="tanh"),  # identity
        Residual([BatchNormalization(), Dense(5, "gelu")]),  # a projection: 4 to 5
        Residual([Dense(5, {"name": "leaky_relu", "negative_slope": 0.1})],
                 projection=True, activation="sigmoid"),
        Dense(3, "softmax")], input_dim=3, seed=9, dtype="float64")
    model.set_weights([w + rng.normal(0, 0.2, w.shape) for w in model.get_weights()])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    assert_gradients_match(model, x, y, training=True)
    assert_gradients_match(model, x, y, training=False)


def test_a_residual_first_layer_and_a_residual_output(use, rng):
    from dnn.layers import Residual

    model = dnn.Sequential([Residual([Dense(3, "relu")], input_dim=3),
                            Residual([Dense(2, "tanh")], activation="sigmoid")],
                           seed=10, dtype="float64")
    model.compile(loss="binary_crossentropy", optimizer="sgd")  # the sigmoid fused as logits
    assert model.layers[-1].emit_logits
    assert_gradients_match(model, data(rng), rng.integers(0, 2, (6, 2)))


@pytest.mark.parametrize("activation", [{"name": "leaky_relu", "negative_slope": 0.05},
                                        {"name": "gelu", "approximate": True}], ids=str)
def test_activation_option_gradients(use, rng, activation):
    model = dnn.Sequential([Dense(5, activation), Activation(activation),
                            dnn.layers.LeakyReLU(0.4), Dense(2)], input_dim=3, seed=3,
                           dtype="float64")
    model.compile(loss="mse", optimizer="sgd")
    assert_gradients_match(model, data(rng), rng.normal(size=(6, 2)))


@pytest.mark.parametrize("layer", [
    lambda: BatchNormalization(center=False), lambda: BatchNormalization(scale=False),
    lambda: BatchNormalization(center=False, scale=False),
    lambda: LayerNormalization(center=False), lambda: LayerNormalization(scale=False),
    lambda: LayerNormalization(rms_scaling=True),
    lambda: Normalization(mean=[0.5, -1.0, 2.0, 0.0], variance=[4.0, 0.25, 1.0, 9.0],
                          invert=True)], ids=lambda f: repr(f()))
def test_normalization_option_gradients(use, rng, layer):
    x = data(rng, n=7, d=3) * 2 + 1
    model = dnn.Sequential([Dense(4, "tanh"), layer(), Dense(2)], input_dim=3, seed=4,
                           dtype="float64")
    model.set_weights([w + rng.normal(0, 0.3, w.shape) for w in model.get_weights()])
    model.compile(loss="mse", optimizer="sgd")
    assert_gradients_match(model, x, rng.normal(size=(7, 2)), training=True)


def test_ignore_class_gradients(use, rng):
    y = rng.integers(0, 3, 6)
    y[[1, 4]] = 2
    model = dnn.Sequential([Dense(4, "tanh"), Dense(3, "softmax")], input_dim=3, seed=8,
                           dtype="float64")
    model.compile(loss=dnn.losses.SparseCategoricalCrossentropy(ignore_class=2),
                  optimizer="sgd")
    assert_gradients_match(model, data(rng), y, sample_weight=rng.uniform(0, 2, 6))
