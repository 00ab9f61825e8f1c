"""Sample and class weights, with Keras semantics: each sample's loss is multiplied by
its weight and the batch loss is the weighted sum over the batch size; class_weight
gives each sample the weight of its class (multiplied into sample_weight)."""
import numpy
import pytest

import dnn
from dnn.data import make_moons
from dnn.layers import Dense


def regression_model(seed=0):
    model = dnn.Sequential([Dense(4, "tanh"), Dense(1)], input_dim=2, seed=seed,
                           dtype="float64")
    model.compile(loss="mse", optimizer="sgd")
    return model


def classifier(loss="binary_crossentropy", units=1, seed=0, dtype="float64"):
    model = dnn.Sequential([Dense(8, "relu"), Dense(units, "sigmoid" if units == 1 else
                                                    "softmax")],
                           input_dim=2, seed=seed, dtype=dtype)
    model.compile(loss=loss, optimizer="adam", metrics=["accuracy"])
    return model


def test_the_weighted_loss_is_the_weighted_sum_over_the_batch_size(use, rng):
    x, y = rng.normal(size=(10, 2)), rng.normal(size=(10, 1))
    w = rng.uniform(0, 3, 10)
    model = regression_model()
    per_sample = ((model.predict(x) - y) ** 2)[:, 0]
    loss, _ = model.loss_and_gradients(x, y, sample_weight=w)
    assert loss == pytest.approx((w * per_sample).sum() / 10, rel=1e-12)
    weighted = model.evaluate(x, y, sample_weight=w, return_dict=True)
    assert weighted["loss"] == pytest.approx(loss, rel=1e-12)
    plain = model.evaluate(x, y, return_dict=True)
    assert plain["loss"] == pytest.approx(per_sample.mean(), rel=1e-12)


def test_unit_weights_train_exactly_as_no_weights(use):
    x, y = make_moons(200, noise=0.2, seed=0)
    plain, weighted = classifier(), classifier()
    plain.fit(x, y, epochs=3, batch_size=32, verbose=0)
    weighted.fit(x, y, epochs=3, batch_size=32, verbose=0, sample_weight=numpy.ones(200))
    for a, b in zip(plain.get_weights(), weighted.get_weights()):
        numpy.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("loss,units,encode", [
    ("binary_crossentropy", 1, lambda y: y),
    ("sparse_categorical_crossentropy", 2, lambda y: y),
    ("categorical_crossentropy", 2, lambda y: numpy.eye(2)[y]),
])
def test_class_weight_is_the_sample_weight_of_each_class(use, loss, units, encode):
    x, y = make_moons(200, noise=0.2, seed=0)
    by_class, by_sample = classifier(loss, units), classifier(loss, units)
    table = {0: 0.5, 1: 3.0}
    extra = numpy.linspace(0.5, 1.5, 200)
    by_class.fit(x, encode(y), epochs=2, batch_size=32, verbose=0, class_weight=table,
                 sample_weight=extra)
    by_sample.fit(x, encode(y), epochs=2, batch_size=32, verbose=0,
                  sample_weight=extra * numpy.where(y == 1, 3.0, 0.5))
    for a, b in zip(by_class.get_weights(), by_sample.get_weights()):
        numpy.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_class_weight_moves_the_decision_towards_the_rare_class(use):
    """An imbalanced task: weighting the rare class raises its recall, as it does in
    Keras."""
    x, y = make_moons(1000, noise=0.35, seed=2)
    keep = (y == 0) | (numpy.arange(1000) % 8 == 0)  # one positive in eight kept
    x, y = x[keep], y[keep]
    recalls = []
    for weights in (None, {0: 1.0, 1: 8.0}):
        model = classifier(seed=1, dtype="float32")
        model.fit(x, y, epochs=30, batch_size=32, verbose=0, class_weight=weights)
        predicted = model.predict(x)[:, 0] > 0.5
        recalls.append(predicted[y == 1].mean())
    assert recalls[1] > recalls[0] + 0.1, recalls


def test_validation_data_may_carry_sample_weights(use, rng):
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(40, 1))
    w_val = rng.uniform(0, 2, 10)
    model = regression_model()
    history = model.fit(x[:30], y[:30], epochs=1, batch_size=30, verbose=0,
                        validation_data=(x[30:], y[30:], w_val))
    expected = model.evaluate(x[30:], y[30:], sample_weight=w_val, return_dict=True)["loss"]
    assert history.history["val_loss"][0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kw,pattern", [
    (dict(sample_weight=numpy.ones(5)),
     r"sample_weight: expected one weight per sample, shape \(40,\); got shape \(5,\)"),
    (dict(sample_weight=-numpy.ones(40)), r"sample_weight: expected weights >= 0; got -1"),
    (dict(sample_weight=numpy.full(40, numpy.nan)), r"sample_weight: expected finite"),
    (dict(class_weight={0: 1.0}), r"class_weight: expected a weight for every class in y; "
                                  r"got none for class 1"),
    (dict(class_weight={0: 1.0, 1: -2.0}), r"class_weight: expected weights >= 0; got -2"),
    (dict(class_weight=[1.0, 2.0]), r"class_weight: expected a dict \{class: weight\}"),
])
def test_bad_weights_are_refused_before_training(use, kw, pattern):
    x, y = make_moons(40, seed=0)
    model = classifier()
    before = model.get_weights()
    with pytest.raises(ValueError, match=pattern):
        model.fit(x, y, epochs=1, verbose=0, **kw)
    for a, b in zip(before, model.get_weights()):
        numpy.testing.assert_array_equal(a, b)


def test_class_weight_needs_a_classification_loss(use, rng):
    model = regression_model()
    with pytest.raises(ValueError, match=r"class_weight: expected a classification loss; "
                                         r"got loss 'mse'"):
        model.fit(rng.normal(size=(8, 2)), rng.normal(size=8), class_weight={0: 1.0},
                  verbose=0)
