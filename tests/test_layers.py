"""Layers and models as Keras users expect them: built at once, readable, normalization
layers with their training and inference modes, initializers and weight penalties."""
import math

import numpy
import pytest

import dnn
from dnn.data import make_moons
from dnn.layers import (
    Activation,
    BatchNormalization,
    Dense,
    Dropout,
    LayerNormalization,
    Normalization,
)


def features(rng, n=64, d=3):
    return rng.normal(size=(n, d))


# ------------------------------------------------------------------ built at once
@pytest.mark.parametrize("make", [
    lambda: dnn.Sequential([Dense(4, "relu"), Dense(1, "sigmoid")], input_dim=3, seed=0),
    lambda: dnn.Sequential([Dense(4, "relu", input_dim=3), Dense(1, "sigmoid")], seed=0),
    lambda: dnn.Sequential(seed=0).add(Dense(4, "relu", input_dim=3)).add(
        Dense(1, "sigmoid")),
], ids=["Sequential(input_dim)", "Dense(input_dim)", "add"])
def test_a_model_whose_input_width_is_known_has_weights_before_fit(use, rng, tmp_path, make):
    model = make()
    assert model.built
    assert [w.shape for w in model.get_weights()] == [(3, 4), (4,), (4, 1), (1,)]
    lines = []
    model.summary(print_fn=lines.append)
    assert "Total params: 21" in lines[0]
    x = features(rng, 5)
    out = model.predict(x)
    assert out.shape == (5, 1) and numpy.isfinite(out).all()
    numpy.testing.assert_array_equal(model(x), out)
    model.save(tmp_path / "m.npz")
    numpy.testing.assert_array_equal(dnn.load_model(tmp_path / "m.npz").predict(x), out)
    model.set_weights([numpy.zeros_like(w) for w in model.get_weights()])
    numpy.testing.assert_array_equal(model(x), numpy.full((5, 1), 0.5, numpy.float32))
    model.compile(loss="binary_crossentropy", optimizer="sgd")
    loss, grads = model.loss_and_gradients(x, numpy.ones(5))
    assert loss == pytest.approx(math.log(2), rel=1e-6) and len(grads) == 4


def test_a_model_without_input_width_waits_for_fit_and_says_so(use, rng):
    model = dnn.Sequential([Dense(4, "relu"), Dense(1)], seed=0)
    assert not model.built
    with pytest.raises(RuntimeError, match="input_dim"):
        model.get_weights()
    lines = []
    model.summary(print_fn=lines.append)
    assert "Not built yet" in lines[0]
    model.compile(loss="mse", optimizer="sgd")
    model.fit(features(rng), numpy.zeros(64), epochs=1, verbose=0)
    assert model.built and model.input_dim == 3


def test_adding_a_layer_keeps_the_weights_already_there(use):
    model = dnn.Sequential([Dense(4, "tanh"), Dense(3, "tanh")], input_dim=2, seed=1)
    before = model.get_weights()
    model.add(Dense(1))
    after = model.get_weights()
    assert len(after) == 6
    for a, b in zip(before, after):
        numpy.testing.assert_array_equal(a, b)


def test_a_declared_input_width_that_disagrees_is_refused(use):
    with pytest.raises(ValueError, match=r"input_dim: expected 3 .*got 2"):
        dnn.Sequential([Dense(4, input_dim=2)], input_dim=3)
    with pytest.raises(ValueError, match=r"Dense: input_dim: expected 5 .*got 4"):
        dnn.Sequential([Dense(4), Dense(2, input_dim=5)], input_dim=3)


def test_every_layer_and_the_model_have_a_readable_repr(use):
    layers = [Normalization(), Dense(8, "relu", kernel_initializer="he_normal",
                                     kernel_regularizer="l2"),
              BatchNormalization(momentum=0.9), Dropout(0.25), LayerNormalization(),
              Activation("tanh"), Dense(1, "sigmoid", name="out")]
    model = dnn.Sequential(layers, input_dim=3, seed=0)
    texts = [repr(layer) for layer in layers]
    assert texts == [
        "Normalization()",
        "Dense(8, activation='relu', kernel_initializer='he_normal', "
        "kernel_regularizer=L2(l2=0.01))",
        "BatchNormalization(momentum=0.9)",
        "Dropout(0.25)",
        "LayerNormalization()",
        "Activation('tanh')",
        "Dense(1, activation='sigmoid', name='out')",
    ]
    assert repr(model) == f"Sequential([{', '.join(texts)}], input_dim=3, seed=0, " \
                          f"dtype='float32')"


def test_summary_counts_trainable_and_non_trainable_weights(use):
    model = dnn.Sequential([Normalization(), Dense(4), BatchNormalization(), Dense(1)],
                           input_dim=3, seed=0)
    text = []
    model.summary(print_fn=text.append)
    # Normalization 3+3 and BatchNormalization's moving stats 4+4 are not trained.
    assert "Total params: 43" in text[0]
    assert "Trainable params: 29" in text[0] and "Non-trainable params: 14" in text[0]


# --------------------------------------------------------------- batch normalization
def bn_model(seed=0, momentum=0.9):
    model = dnn.Sequential([BatchNormalization(momentum=momentum)], input_dim=3, seed=seed,
                           dtype="float64")
    model.compile(loss="mse", optimizer="sgd")
    return model


def test_batch_norm_uses_batch_statistics_in_training_and_moving_ones_at_inference(use, rng):
    model = bn_model()
    gamma, beta = numpy.array([1.0, 2.0, 0.5]), numpy.array([0.0, -1.0, 3.0])
    moving_mean, moving_var = numpy.array([1.0, 2.0, 3.0]), numpy.array([4.0, 1.0, 0.25])
    model.set_weights([gamma, beta, moving_mean, moving_var])
    x = rng.normal(5.0, 3.0, size=(32, 3))
    eps = 1e-3
    inference = gamma * (x - moving_mean) / numpy.sqrt(moving_var + eps) + beta
    numpy.testing.assert_allclose(model.predict(x), inference, rtol=1e-12)
    loss, _ = model.loss_and_gradients(x, numpy.zeros((32, 3)), training=False)
    assert loss == pytest.approx((inference ** 2).mean(), rel=1e-12)
    # Training mode: the batch's mean and biased variance (the loss against zero targets
    # is the mean square of the output), and the moving statistics take a step towards
    # them, as a training call does in Keras and PyTorch.
    batch = gamma * (x - x.mean(0)) / numpy.sqrt(x.var(0) + eps) + beta
    loss, _ = model.loss_and_gradients(x, numpy.zeros((32, 3)), training=True)
    assert loss == pytest.approx((batch ** 2).mean(), rel=1e-12)
    numpy.testing.assert_allclose(model.get_weights()[2], 0.9 * moving_mean + 0.1 * x.mean(0),
                                  rtol=1e-12)


def test_batch_norm_moving_statistics_follow_keras_momentum(use, rng):
    model = bn_model(momentum=0.9)
    model.compile(loss="mse", optimizer=dnn.optimizers.SGD(learning_rate=1e-12))
    x = rng.normal(2.0, 3.0, size=(40, 3))
    model.fit(x, numpy.zeros((40, 3)), epochs=1, batch_size=20, shuffle=False, verbose=0)
    mean, var = numpy.zeros(3), numpy.ones(3)
    for batch in (x[:20], x[20:]):
        mean = 0.9 * mean + 0.1 * batch.mean(0)
        var = 0.9 * var + 0.1 * batch.var(0)
    _, _, moving_mean, moving_var = model.get_weights()
    numpy.testing.assert_allclose(moving_mean, mean, rtol=1e-12)
    numpy.testing.assert_allclose(moving_var, var, rtol=1e-12)
    # evaluate and predict use them and leave them alone
    model.evaluate(x, numpy.zeros((40, 3)))
    model.predict(x)
    numpy.testing.assert_array_equal(model.get_weights()[2], moving_mean)


def deep_bn_model(seed):
    model = dnn.Sequential([Dense(16, "relu"), BatchNormalization(), Dropout(0.2),
                            Dense(16, "relu"), BatchNormalization(), Dense(1, "sigmoid")],
                           input_dim=2, seed=seed)
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def test_batch_norm_statistics_are_saved_and_a_resume_is_bitwise(use, tmp_path):
    x, y = make_moons(400, noise=0.2, seed=0)
    straight = deep_bn_model(3)
    straight.fit(x, y, epochs=4, batch_size=32, verbose=0)
    first = deep_bn_model(3)
    first.fit(x, y, epochs=2, batch_size=32, verbose=0)
    first.save(tmp_path / "half.npz")
    loaded = dnn.load_model(tmp_path / "half.npz")
    for a, b in zip(first.get_weights(), loaded.get_weights()):
        numpy.testing.assert_array_equal(a, b)
    numpy.testing.assert_array_equal(loaded.predict(x), first.predict(x))
    loaded.fit(x, y, epochs=4, initial_epoch=2, batch_size=32, verbose=0)
    moving = [w for w, (_, name, _) in zip(straight.get_weights(), straight.weights.views)
              if name.startswith("moving_")]
    assert len(moving) == 4 and not all(numpy.array_equal(m, 0) for m in moving[::2])
    for a, b in zip(straight.get_weights(), loaded.get_weights()):
        numpy.testing.assert_array_equal(a, b)


def test_one_training_flag_drives_dropout_and_batch_norm(use, rng):
    model = dnn.Sequential([Dense(8, "relu"), Dropout(0.5), BatchNormalization(), Dense(1)],
                           input_dim=3, seed=2, dtype="float64")
    model.compile(loss="mse", optimizer="sgd")
    x, y = features(rng, 16), rng.normal(size=(16, 1))
    infer = [model.loss_and_gradients(x, y)[0] for _ in range(2)]
    assert infer[0] == infer[1]
    assert model.evaluate(x, y, return_dict=True)["loss"] == pytest.approx(infer[0], rel=1e-12)
    numpy.testing.assert_allclose(((model.predict(x) - y) ** 2).mean(), infer[0], rtol=1e-12)
    train = [model.loss_and_gradients(x, y, training=True)[0] for _ in range(2)]
    assert train[0] != infer[0]
    # Dropout's mask is keyed by the step count, which only an update moves.
    assert train[0] == train[1]


# --------------------------------------------------------------- layer normalization
def test_layer_norm_normalizes_each_sample_alike_in_both_modes(use, rng):
    model = dnn.Sequential([LayerNormalization(epsilon=1e-3)], input_dim=5, seed=0,
                           dtype="float64")
    gamma, beta = rng.normal(size=5), rng.normal(size=5)
    model.set_weights([gamma, beta])
    x = rng.normal(3.0, 2.0, size=(7, 5))
    want = gamma * (x - x.mean(1, keepdims=True)) / numpy.sqrt(x.var(1, keepdims=True)
                                                               + 1e-3) + beta
    numpy.testing.assert_allclose(model.predict(x), want, rtol=1e-12, atol=1e-13)
    model.compile(loss="mse", optimizer="sgd")
    trained, _ = model.loss_and_gradients(x, numpy.zeros((7, 5)), training=True)
    assert trained == pytest.approx((want ** 2).mean(), rel=1e-12)


# ------------------------------------------------------------------ Normalization
def test_normalization_adapts_to_the_data_and_clamps_constant_features(use, rng):
    x = rng.normal([100.0, -5.0, 0.0], [20.0, 0.1, 1.0], size=(500, 3))
    x[:, 2] = 7.0  # a constant feature: variance 0
    norm = Normalization()
    model = dnn.Sequential([norm], input_dim=3, seed=0, dtype="float64")
    norm.adapt(x)
    mean, variance = model.get_weights()
    numpy.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    numpy.testing.assert_allclose(variance, x.var(0), rtol=1e-12, atol=1e-20)
    out = model.predict(x)
    numpy.testing.assert_allclose(out[:, :2].mean(0), 0.0, atol=1e-10)
    numpy.testing.assert_allclose(out[:, :2].std(0), 1.0, rtol=1e-10)
    numpy.testing.assert_array_equal(out[:, 2], 0.0)  # not inf or nan


def test_normalization_can_adapt_before_the_model_is_built(use, rng):
    x = rng.normal(50.0, 10.0, size=(200, 4))
    norm = Normalization().adapt(x)
    model = dnn.Sequential([norm, Dense(1)], seed=0, dtype="float64")
    model.build(4)
    numpy.testing.assert_allclose(model.get_weights()[0], x.mean(0), rtol=1e-12)


def test_normalization_refuses_data_of_the_wrong_width(use, rng):
    norm = Normalization()
    dnn.Sequential([norm], input_dim=3)
    with pytest.raises(ValueError, match=r"adapt: data: expected 3 features; got 2"):
        norm.adapt(rng.normal(size=(10, 2)))
    with pytest.raises(ValueError, match="finite"):
        norm.adapt(numpy.array([[1.0, numpy.nan, 2.0]]))


def test_a_model_trained_on_raw_features_predicts_on_raw_features(use, tmp_path):
    x, y = make_moons(600, noise=0.15, seed=1)
    raw = x * [300.0, 0.01] + [5000.0, -2.0]  # scales a plain MLP cannot train on
    norm = Normalization(input_dim=2)
    model = dnn.Sequential([norm, Dense(16, "relu"), Dense(16, "relu"), Dense(1, "sigmoid")],
                           seed=0)
    norm.adapt(raw)
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(raw, y, epochs=40, batch_size=32, verbose=0)
    assert model.evaluate(raw, y, return_dict=True)["accuracy"] >= 0.95
    model.save(tmp_path / "m.npz")
    loaded = dnn.load_model(tmp_path / "m.npz")
    numpy.testing.assert_array_equal(loaded.predict(raw), model.predict(raw))


# -------------------------------------------------------------------- initializers
def kernel_of(initializer, fan_in=400, units=300, activation="linear", seed=0):
    model = dnn.Sequential([Dense(units, activation, kernel_initializer=initializer,
                                  bias_initializer="zeros")],
                           input_dim=fan_in, seed=seed, dtype="float64")
    return model.get_weights()[0]


@pytest.mark.parametrize("name,std", [
    ("he_normal", math.sqrt(2 / 400)), ("he_uniform", math.sqrt(2 / 400)),
    ("glorot_normal", math.sqrt(2 / 700)), ("glorot_uniform", math.sqrt(2 / 700)),
    ("lecun_normal", math.sqrt(1 / 400)), ("random_normal", 0.05),
])
def test_initializers_draw_with_keras_variance(use, name, std):
    w = kernel_of(name)
    assert abs(w.mean()) < 0.02 * std * 10
    assert w.std() == pytest.approx(std, rel=0.02)
    if name.endswith("_uniform"):
        assert abs(w).max() <= math.sqrt(3) * std
    elif name != "random_normal":  # truncated at two standard deviations of the draw
        assert abs(w).max() <= 2 * std / 0.87962566103423978


@pytest.mark.parametrize("name,value", [("zeros", 0.0), ("ones", 1.0)])
def test_constant_initializers(use, name, value):
    model = dnn.Sequential([Dense(3, kernel_initializer=name, bias_initializer=name)],
                           input_dim=2, seed=0)
    for w in model.get_weights():
        numpy.testing.assert_array_equal(w, value)


def test_the_default_initialization_is_unchanged(use):
    """'auto' draws He-normal for ReLU and Glorot-uniform otherwise, from the model's
    generator in layer order, with ReLU biases at 0.1 (the draws seed 002's results
    were measured with)."""
    model = dnn.Sequential([Dense(4, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=5,
                           dtype="float64")
    rng = numpy.random.default_rng(5)
    w0 = rng.normal(0.0, math.sqrt(2 / 2), (2, 4))
    limit = math.sqrt(6 / 5)
    w1 = rng.uniform(-limit, limit, (4, 1))
    got = model.get_weights()
    numpy.testing.assert_array_equal(got[0], w0)
    numpy.testing.assert_array_equal(got[1], numpy.full(4, 0.1))
    numpy.testing.assert_array_equal(got[2], w1)
    numpy.testing.assert_array_equal(got[3], numpy.zeros(1))


def test_an_unknown_initializer_is_refused_by_name():
    with pytest.raises(ValueError, match=r"Dense: kernel_initializer: expected one of "
                                         r"he_normal.*got 'he'"):
        Dense(3, kernel_initializer="he")


# --------------------------------------------------------------------- regularizers
def test_weight_penalties_join_the_loss_fit_reports(use, rng):
    x, y = features(rng, 32), rng.normal(size=(32, 1))
    reg = dnn.regularizers.L1L2(l1=0.01, l2=0.02)
    model = dnn.Sequential([Dense(4, "tanh", kernel_regularizer=reg, bias_regularizer="l2"),
                            Dense(1, kernel_regularizer="l1")], input_dim=3, seed=0,
                           dtype="float64")
    model.compile(loss="mse", optimizer=dnn.optimizers.SGD(learning_rate=1e-12))
    w0, b0, w1, b1 = model.get_weights()
    penalty = 0.01 * abs(w0).sum() + 0.02 * (w0 ** 2).sum() + 0.01 * (b0 ** 2).sum() + \
        0.01 * abs(w1).sum()
    data_loss = ((model.predict(x) - y) ** 2).mean()
    loss, _ = model.loss_and_gradients(x, y)
    assert loss == pytest.approx(data_loss + penalty, rel=1e-12)
    assert model.evaluate(x, y, return_dict=True)["loss"] == pytest.approx(data_loss + penalty,
                                                                           rel=1e-9)
    history = model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert history.history["loss"][0] == pytest.approx(data_loss + penalty, rel=1e-9)


def test_l2_keeps_weights_small(use):
    x, y = make_moons(300, noise=0.3, seed=0)
    norms = []
    for reg in (None, dnn.regularizers.L2(0.05)):
        model = dnn.Sequential([Dense(32, "relu", kernel_regularizer=reg),
                                Dense(1, "sigmoid", kernel_regularizer=reg)],
                               input_dim=2, seed=0)
        model.compile(loss="binary_crossentropy", optimizer="adam")
        model.fit(x, y, epochs=30, batch_size=32, verbose=0)
        norms.append(sum(float((w ** 2).sum()) for w in model.get_weights()[::2]))
    assert norms[1] < 0.7 * norms[0], norms  # measured: 0.58


@pytest.mark.parametrize("value,pattern", [
    ("l3", r"Dense: kernel_regularizer: expected None, .*got 'l3'"),
    (-0.1, r"expected None"),
])
def test_a_bad_regularizer_is_refused(value, pattern):
    with pytest.raises(ValueError, match=pattern):
        Dense(3, kernel_regularizer=value)
    with pytest.raises(ValueError, match=r"L2: l2: expected a finite number >= 0; got -1"):
        dnn.regularizers.L2(-1)


def test_a_residual_block_is_summarised_with_its_layers(use):
    from dnn.layers import Residual

    model = dnn.Sequential([Dense(8, "relu", input_dim=3),
                            Residual([Dense(8, "relu"), Dense(8)], activation="relu"),
                            Residual([BatchNormalization(), Dense(4)])], seed=0)
    lines = []
    model.summary(print_fn=lines.append)
    text = lines[0]
    rows = [" ".join(line.split()) for line in text.splitlines()]
    assert "Residual(2 layers, relu) (None, 8) 144" in rows
    assert "Dense(8, relu) (None, 8) 72" in rows
    assert "projection: Dense(4, linear) (None, 4) 36" in rows
    assert "\n  projection: Dense(4, linear)" in text  # indented under its block
    assert model.count_params() == 32 + 144 + (32 + 36 + 36)
    assert repr(model.layers[1]) == ("Residual([Dense(8, activation='relu'), "
                                     "Dense(8, activation='linear')], activation='relu')")


def test_residual_blocks_refuse_what_they_cannot_be(use):
    from dnn.layers import Residual

    with pytest.raises(TypeError, match="Residual: layers: expected a non-empty list"):
        Residual([])
    with pytest.raises(ValueError, match="Residual: projection: expected 'auto', True or "
                                         "False; got 'yes'"):
        Residual([Dense(2)], projection="yes")
    with pytest.raises(ValueError, match=r"projection: expected 'auto' or True when the "
                                         r"layers change the width; got False, and 3 "
                                         r"features in, 2 out"):
        dnn.Sequential([Residual([Dense(2)], projection=False)], input_dim=3)


def test_residual_blocks_save_and_load_with_their_layers(use, tmp_path, rng):
    from dnn.layers import Residual

    model = dnn.Sequential([Residual([Dense(6, "relu"), Dropout(0.3), BatchNormalization(),
                                      Residual([Dense(6, "tanh")])],
                                     activation={"name": "leaky_relu", "negative_slope": 0.1},
                                     input_dim=4), Dense(2, "softmax")], seed=3)
    x, y = rng.normal(size=(64, 4)), rng.integers(0, 2, 64)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = dnn.load_model(tmp_path / "m.npz")
    assert repr(loaded) == repr(model)
    numpy.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    # resuming trains on exactly as the original: the inner Dropout draws the same masks
    model.fit(x, y, epochs=1, verbose=0)
    loaded.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        numpy.testing.assert_array_equal(a, b)
