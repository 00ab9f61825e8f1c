"""What Keras 3 computes, written here in NumPy from Keras's own formulas (keras/src at
3.15: backend/numpy/nn.py, layers/normalization, losses/loss.py, metrics/metrics_utils.py
and confusion_metrics.py), against dnn in float64 to 1e-12, on every backend. These
tests need no Keras; test_keras_archive.py compares with Keras itself where installed."""
import functools
import math

import numpy
import pytest

import dnn
from dnn.layers import (Activation, BatchNormalization, Dense, LayerNormalization,
                        LeakyReLU, Normalization)

TIGHT = dict(rtol=1e-12, atol=1e-14)
_erf = numpy.vectorize(math.erf)


def keras_leaky_relu(x, negative_slope=0.2):
    return numpy.maximum(x, negative_slope * x)  # keras numpy backend, slope in [0, 1]


def keras_gelu(x, approximate=False):
    if approximate:
        cdf = 0.5 * (1.0 + numpy.tanh(numpy.sqrt(2 / numpy.pi) * (x + 0.044715 * x ** 3)))
        return x * cdf
    return x * (_erf(x / numpy.sqrt(2)) + 1) / 2


def one_layer(activation, rng, width=5):
    """A float64 Dense of ``activation``, its weights and a batch."""
    model = dnn.Sequential([Dense(width, activation)], input_dim=4, seed=0, dtype="float64")
    kernel, bias = rng.normal(size=(4, width)), rng.normal(size=width)
    model.set_weights([kernel, bias])
    x = rng.normal(size=(50, 4)) * 2
    return model, x, x @ kernel + bias


@pytest.mark.parametrize("activation,keras", [
    ("leaky_relu", keras_leaky_relu),
    (dnn.activations.leaky_relu, keras_leaky_relu),
    (functools.partial(dnn.activations.leaky_relu, negative_slope=0.05),
     functools.partial(keras_leaky_relu, negative_slope=0.05)),
    ({"name": "leaky_relu", "negative_slope": 0.0}, lambda z: numpy.maximum(z, 0)),
    ("gelu", keras_gelu),
    (dnn.activations.gelu, keras_gelu),
    ({"name": "gelu", "approximate": True}, functools.partial(keras_gelu, approximate=True)),
], ids=str)
def test_dense_activations_compute_what_keras_does(use, rng, activation, keras):
    model, x, z = one_layer(activation, rng)
    numpy.testing.assert_allclose(model.predict(x), keras(z), **TIGHT)


def test_the_leaky_relu_layer_has_keras_default_and_its_slope(use, rng):
    model = dnn.Sequential([LeakyReLU(), LeakyReLU(negative_slope=0.5)], input_dim=3,
                           dtype="float64")
    x = rng.normal(size=(20, 3))
    numpy.testing.assert_allclose(model.predict(x),
                                  keras_leaky_relu(keras_leaky_relu(x, 0.3), 0.5), **TIGHT)
    assert model.layers[0].negative_slope == 0.3 and model.layers[0].get_config()[
        "negative_slope"] == 0.3


def test_the_activation_functions_compute_on_host_arrays():
    x = numpy.linspace(-4, 4, 33)
    numpy.testing.assert_allclose(dnn.activations.gelu(x), keras_gelu(x), **TIGHT)
    numpy.testing.assert_allclose(dnn.activations.gelu(x, approximate=True),
                                  keras_gelu(x, True), **TIGHT)
    numpy.testing.assert_allclose(dnn.activations.leaky_relu(x, negative_slope=0.1),
                                  keras_leaky_relu(x, 0.1), **TIGHT)
    assert dnn.activations.relu([-1, 2]).tolist() == [0.0, 2.0]


def test_without_scipy_erf_is_the_c_librarys(monkeypatch):
    """The reference's fallback when SciPy is absent: math.erf elementwise."""
    from dnn.kernels import reference

    x = numpy.linspace(-6, 6, 101)
    numpy.testing.assert_allclose(reference.libm_erf(x), _erf(x), rtol=0, atol=0)
    monkeypatch.setattr(reference, "host_erf", lambda: reference.libm_erf)
    numpy.testing.assert_allclose(reference.activation("gelu", x), keras_gelu(x), **TIGHT)


@pytest.mark.parametrize("identifier,config", [
    ("leaky_relu", "leaky_relu"),
    (functools.partial(dnn.activations.leaky_relu, negative_slope=0.2), "leaky_relu"),
    (functools.partial(dnn.activations.leaky_relu, negative_slope=0.1),
     {"name": "leaky_relu", "negative_slope": 0.1}),
    (dnn.activations.gelu, "gelu"),
    (functools.partial(dnn.activations.gelu, approximate=True),
     {"name": "gelu", "approximate": True}),
    (None, "linear"),
], ids=str)
def test_activation_identifiers_and_their_saved_form(identifier, config):
    function = dnn.activations.get(identifier)
    assert function.get_config() == config
    assert dnn.activations.get(config) == function
    layer = dnn.layers.layer_from_config(Dense(3, identifier).get_config())
    assert layer.activation_function == function


@pytest.mark.parametrize("identifier,pattern", [
    ("swish", r"activation: expected one of linear, relu.*got 'swish'"),
    ({"name": "leaky_relu", "negative_slope": -0.1},
     r"negative_slope: expected a finite number >= 0; got -0.1"),
    ({"name": "relu", "negative_slope": 0.1}, r"'relu' takes no options; got negative_slope"),
    (functools.partial(dnn.activations.gelu, approximate="yes"),
     r"approximate: expected True or False; got 'yes'"),
    (functools.partial(dnn.activations.leaky_relu, 0.3), r"by keyword"),
    (lambda x: x, r"activation: expected one of"),
], ids=str)
def test_bad_activations_are_named(identifier, pattern):
    with pytest.raises(ValueError, match=pattern):
        Dense(3, identifier)


def test_leaky_relu_layer_refuses_a_negative_slope():
    with pytest.raises(ValueError, match=r"LeakyReLU: negative_slope: expected a finite "
                                         r"number >= 0; got -1"):
        LeakyReLU(-1)


# ------------------------------------------------------------------- normalization
def keras_batch_norm(x, gamma, beta, mean, var, epsilon=1e-3):
    inv = 1 / numpy.sqrt(var + epsilon)
    inv = inv if gamma is None else inv * gamma
    return x * inv + ((0 if beta is None else beta) - mean * inv)


def keras_layer_norm(x, gamma, beta, epsilon=1e-3, rms_scaling=False):
    if rms_scaling:  # keras/src/ops/nn.py _layer_normalization
        out = x / numpy.sqrt(x.var(axis=-1, keepdims=True) + epsilon)
        return out if gamma is None else out * gamma
    mean, var = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
    inv = 1 / numpy.sqrt(var + epsilon)
    inv = inv if gamma is None else inv * gamma
    return x * inv + ((0 if beta is None else beta) - mean * inv)


def randomized(model, rng):
    model.set_weights([w + rng.normal(0, 0.3, w.shape) for w in model.get_weights()])
    return model


@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False),
                                          (False, False)])
def test_batch_normalization_center_and_scale(use, rng, center, scale):
    layer = BatchNormalization(center=center, scale=scale, momentum=0.9)
    model = randomized(dnn.Sequential([layer], input_dim=4, dtype="float64"), rng)
    assert [n for n, _ in layer.param_shapes] == [n for n, on in (("gamma", scale),
                                                                   ("beta", center)) if on]
    weights = model.get_weights()
    gamma = weights[0] if scale else None
    beta = weights[int(scale)] if center else None
    mm, mv = weights[-2:]
    x = rng.normal(size=(30, 4)) * 2 + 1
    numpy.testing.assert_allclose(model.predict(x), keras_batch_norm(x, gamma, beta, mm, mv),
                                  **TIGHT)
    model.compile(loss="mse", optimizer="sgd")
    model.loss_and_gradients(x, numpy.zeros((30, 4)), training=True)  # moves the statistics
    numpy.testing.assert_allclose(model.get_weights()[-2], mm * 0.9 + x.mean(0) * 0.1, **TIGHT)


@pytest.mark.parametrize("center,scale,rms", [(True, True, False), (False, True, False),
                                              (True, False, False), (False, False, False),
                                              (True, True, True), (False, False, True)])
def test_layer_normalization_options(use, rng, center, scale, rms):
    layer = LayerNormalization(center=center, scale=scale, rms_scaling=rms)
    model = randomized(dnn.Sequential([layer], input_dim=6, dtype="float64"), rng)
    names = [n for n, _ in layer.param_shapes]
    assert names == (["gamma"] if rms else
                     [n for n, on in (("gamma", scale), ("beta", center)) if on])
    weights = dict(zip(names, model.get_weights()))
    x = rng.normal(size=(20, 6)) * 3 + 2
    want = keras_layer_norm(x, weights.get("gamma"), weights.get("beta"), rms_scaling=rms)
    numpy.testing.assert_allclose(model.predict(x), want, **TIGHT)


def test_normalization_invert_undoes_normalization(use, rng):
    mean, variance = rng.normal(size=3), rng.uniform(0.5, 4, 3)
    x = rng.normal(size=(10, 3))
    inverse = dnn.Sequential([Normalization(mean, variance, invert=True)], input_dim=3,
                             dtype="float64")
    keras = mean + x * numpy.maximum(numpy.sqrt(variance), 1e-7)
    numpy.testing.assert_allclose(inverse.predict(x), keras, **TIGHT)
    there_and_back = dnn.Sequential([Normalization(mean, variance),
                                     Normalization(mean, variance, invert=True)],
                                    input_dim=3, dtype="float64")
    numpy.testing.assert_allclose(there_and_back.predict(x), x, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------ losses
def keras_sparse_xent_ignoring(logits, labels, ignore_class, sample_weight=None):
    """keras.losses.sparse_categorical_crossentropy with ignore_class, reduced by Loss:
    the mask's weight total / valid on the valid rows (losses/loss.py apply_mask)."""
    log_p = logits - logits.max(1, keepdims=True)
    log_p = log_p - numpy.log(numpy.exp(log_p).sum(1, keepdims=True))
    valid = labels != ignore_class
    per = numpy.where(valid, -log_p[numpy.arange(len(labels)), numpy.where(valid, labels, 0)],
                      0.0)
    mask = numpy.where(valid, len(labels) / valid.sum(), 0.0) if valid.any() else \
        numpy.zeros(len(labels))
    weights = mask if sample_weight is None else mask * sample_weight
    return (per * weights).sum() / len(labels)


@pytest.mark.parametrize("ignore_class", [1, -1, 7])
@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_cross_entropy_ignore_class(use, rng, ignore_class, weighted):
    model, x, z = one_layer("softmax", rng, width=4)
    labels = rng.integers(0, 4, 50)
    labels[::3] = ignore_class
    weights = rng.uniform(0, 2, 50) if weighted else None
    loss = dnn.losses.SparseCategoricalCrossentropy(ignore_class=ignore_class)
    model.compile(loss=loss, optimizer="sgd")
    got, grads = model.loss_and_gradients(x, labels, sample_weight=weights)
    assert got == pytest.approx(keras_sparse_xent_ignoring(z, labels, ignore_class, weights),
                                rel=1e-12)
    # the ignored rows do not reach the gradient: the same without them, rescaled
    keep = labels != ignore_class
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    _, plain = model.loss_and_gradients(x[keep], labels[keep],
                                        sample_weight=None if weights is None else weights[keep])
    for a, b in zip(grads, plain):
        numpy.testing.assert_allclose(a, b, **TIGHT)


def test_ignore_class_with_every_row_ignored_is_zero(use, rng):
    model, x, _ = one_layer("softmax", rng, width=3)
    model.compile(loss=dnn.losses.SparseCategoricalCrossentropy(ignore_class=2),
                  optimizer="sgd")
    loss, grads = model.loss_and_gradients(x, numpy.full(50, 2))
    assert loss == 0 and not any(numpy.abs(g).any() for g in grads)


def test_ignore_class_still_refuses_other_bad_labels(use, rng):
    model, x, _ = one_layer("softmax", rng, width=3)
    model.compile(loss=dnn.losses.SparseCategoricalCrossentropy(ignore_class=255),
                  optimizer="sgd")
    labels = numpy.full(50, 255)
    labels[0] = 3
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\).*got label 3"):
        model.fit(x, labels, verbose=0)


@pytest.mark.parametrize("alias,cls", [("bce", dnn.losses.BinaryCrossentropy),
                                       ("BCE", dnn.losses.BinaryCrossentropy),
                                       ("MSE", dnn.losses.MeanSquaredError),
                                       ("MAE", dnn.losses.MeanAbsoluteError),
                                       ("Huber", dnn.losses.Huber),
                                       ("SparseCategoricalCrossentropy",
                                        dnn.losses.SparseCategoricalCrossentropy)])
def test_keras_loss_aliases(alias, cls):
    assert type(dnn.losses.get(alias)) is cls


# ----------------------------------------------------------------------- metrics
def keras_confusion(scores, targets, thresholds, top_k=None, class_id=None, weights=None):
    """update_confusion_matrix_variables: top_k filter (-1e10 outside), class_id column,
    labels cast to bool, predictions ``> threshold``; (tp, fp, fn) per threshold."""
    y_pred, y_true = scores.copy(), targets.copy()
    if top_k is not None:
        order = numpy.argsort(-y_pred, axis=1, kind="stable")
        in_top = numpy.zeros_like(y_pred, bool)
        numpy.put_along_axis(in_top, order[:, :top_k], True, axis=1)
        y_pred = numpy.where(in_top, y_pred, -1e10)
    if class_id is not None:
        y_pred, y_true = y_pred[:, class_id:class_id + 1], y_true[:, class_id:class_id + 1]
    w = numpy.ones_like(y_pred) if weights is None else \
        numpy.broadcast_to(weights[:, None], y_pred.shape)
    label = y_true.astype(bool)
    out = []
    for t in thresholds:
        pred = y_pred > t
        out.append(((w * (pred & label)).sum(), (w * (pred & ~label)).sum(),
                    (w * (~pred & label)).sum()))
    return numpy.array(out)


def keras_precision_recall(counts):
    tp, fp, fn = counts.T
    with numpy.errstate(invalid="ignore", divide="ignore"):
        precision = numpy.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = numpy.where(tp + fn > 0, tp / (tp + fn), 0.0)
    return precision, recall


@pytest.fixture
def multilabel(use):
    """A sigmoid model of 4 outputs (its logits fused into binary cross-entropy) and
    one-hot targets, probabilities and per-sample weights."""
    rng = numpy.random.default_rng(5)
    x = rng.normal(size=(300, 3))
    y = numpy.eye(4)[rng.integers(0, 4, 300)]
    model = dnn.Sequential([Dense(8, "tanh"), Dense(4, "sigmoid")], input_dim=3, seed=1,
                           dtype="float64")
    model.compile(loss="binary_crossentropy", optimizer="adam")
    model.fit(x, y, epochs=2, verbose=0)
    return model, x, y, model.predict(x), rng.uniform(0, 2, 300)


def evaluate(model, x, y, metrics=None, weighted=None, sample_weight=None, loss=None):
    model.compile(loss=loss or model.loss, optimizer=model.optimizer or "sgd", metrics=metrics,
                  weighted_metrics=weighted)
    return model.evaluate(x, y, batch_size=64, sample_weight=sample_weight, return_dict=True)


@pytest.mark.parametrize("options", [dict(), dict(thresholds=[0.2, 0.5, 0.9]),
                                     dict(top_k=2), dict(top_k=1, thresholds=0.3),
                                     dict(class_id=2), dict(class_id=1, thresholds=[0.1, 0.6]),
                                     dict(top_k=2, class_id=3)], ids=str)
def test_precision_and_recall_options_as_keras(multilabel, options):
    model, x, y, probs, _ = multilabel
    logs = evaluate(model, x, y, [dnn.metrics.Precision(**options),
                                  dnn.metrics.Recall(**options)])
    thresholds = options.get("thresholds")
    if thresholds is None:
        thresholds = [0.5 if "top_k" not in options else -1e10]
    listed = isinstance(thresholds, list)
    counts = keras_confusion(probs, y, thresholds if listed else [thresholds],
                             options.get("top_k"), options.get("class_id"))
    precision, recall = keras_precision_recall(counts)
    if not listed or len(thresholds) == 1:
        precision, recall = precision[0], recall[0]
    numpy.testing.assert_allclose(logs["precision"], precision, **TIGHT)
    numpy.testing.assert_allclose(logs["recall"], recall, **TIGHT)


def test_precision_with_class_id_on_a_softmax_output(use):
    rng = numpy.random.default_rng(6)
    x, labels = rng.normal(size=(200, 3)), rng.integers(0, 3, 200)
    model = dnn.Sequential([Dense(3, "softmax")], input_dim=3, seed=2, dtype="float64")
    model.set_weights([rng.normal(size=(3, 3)), rng.normal(size=3)])
    onehot = numpy.eye(3)[labels]
    logs = evaluate(model, x, onehot, [dnn.metrics.Precision(class_id=1),
                                       dnn.metrics.Recall(top_k=1)],
                    loss="categorical_crossentropy")
    probs = model.predict(x)
    precision, _ = keras_precision_recall(keras_confusion(probs, onehot, [0.5], class_id=1))
    _, recall = keras_precision_recall(keras_confusion(probs, onehot, [-1e10], top_k=1))
    assert logs["precision"] == pytest.approx(precision[0], abs=1e-12)
    assert logs["recall"] == pytest.approx(recall[0], abs=1e-12)


def keras_auc(probs, y, num_thresholds=200, curve="ROC", weights=None):
    """AUC from Keras's confusion counts at its thresholds (metrics/confusion_metrics.py:
    result, interpolate_pr_auc)."""
    eps = 1e-7
    thresholds = [-eps] + [(i + 1) / (num_thresholds - 1)
                           for i in range(num_thresholds - 2)] + [1 + eps]
    counts = keras_confusion(probs, y, thresholds, weights=weights)
    tp, fp, fn = counts.T
    tn = (numpy.ones_like(y) if weights is None else
          numpy.broadcast_to(weights[:, None], y.shape))[~y.astype(bool)].sum() - fp

    def div(a, b):
        return numpy.divide(a, b, out=numpy.zeros_like(a), where=b != 0)

    if curve == "ROC":
        tpr, fpr = div(tp, tp + fn), div(fp, fp + tn)
        return ((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2).sum()
    dtp = tp[:-1] - tp[1:]
    p = tp + fp
    dp = p[:-1] - p[1:]
    slope = div(dtp, numpy.maximum(dp, 0))
    intercept = tp[1:] - slope * p[1:]
    ratio = numpy.where((p[:-1] > 0) & (p[1:] > 0), div(p[:-1], numpy.maximum(p[1:], 0)), 1)
    return div(slope * (dtp + intercept * numpy.log(ratio)),
               numpy.maximum(tp[1:] + fn[1:], 0)).sum()


@pytest.mark.parametrize("curve", ["ROC", "PR"])
@pytest.mark.parametrize("num_thresholds", [5, 200])
def test_auc_curves_as_keras(multilabel, curve, num_thresholds):
    model, x, y, probs, weights = multilabel
    auc = dnn.metrics.AUC(num_thresholds=num_thresholds, curve=curve)
    logs = evaluate(model, x, y, [auc], weighted=[dnn.metrics.AUC(num_thresholds, curve)],
                    sample_weight=weights)
    assert logs["auc"] == pytest.approx(keras_auc(probs, y, num_thresholds, curve), abs=1e-12)
    assert logs["weighted_auc"] == pytest.approx(
        keras_auc(probs, y, num_thresholds, curve, weights), abs=1e-12)


def test_weighted_metrics_divide_by_the_weights(multilabel):
    model, x, y, probs, weights = multilabel
    names = ["binary_accuracy", "mae", "precision", "recall"]
    logs = evaluate(model, x, y, ["binary_accuracy"], weighted=names, sample_weight=weights)
    matches = ((probs > 0.5) == (y > 0.5)).mean(axis=1)
    assert logs["binary_accuracy"] == pytest.approx(matches.mean(), abs=1e-12)
    assert logs["weighted_binary_accuracy"] == pytest.approx(
        (weights * matches).sum() / weights.sum(), abs=1e-12)
    assert logs["mae"] == pytest.approx(
        (weights * numpy.abs(probs - y).mean(axis=1)).sum() / weights.sum(), abs=1e-12)
    precision, recall = keras_precision_recall(keras_confusion(probs, y, [0.5],
                                                               weights=weights))
    assert logs["precision"] == pytest.approx(precision[0], abs=1e-12)
    assert logs["recall"] == pytest.approx(recall[0], abs=1e-12)
    # Without sample weights a weighted metric is the plain one.
    logs = evaluate(model, x, y, weighted=["binary_accuracy"])
    assert logs["binary_accuracy"] == pytest.approx(matches.mean(), abs=1e-12)


def test_weighted_categorical_metrics(use):
    rng = numpy.random.default_rng(7)
    x, labels, weights = rng.normal(size=(150, 3)), rng.integers(0, 4, 150), \
        rng.uniform(0, 3, 150)
    model = dnn.Sequential([Dense(4, "softmax")], input_dim=3, seed=2, dtype="float64")
    model.set_weights([rng.normal(size=(3, 4)), rng.normal(size=4)])
    logs = evaluate(model, x, labels,
                    weighted=["accuracy", dnn.metrics.SparseTopKCategoricalAccuracy(k=2)],
                    sample_weight=weights, loss="sparse_categorical_crossentropy")
    probs = model.predict(x)
    hit = probs.argmax(1) == labels
    in_top = (probs > probs[numpy.arange(150), labels][:, None]).sum(1) < 2
    assert logs["accuracy"] == pytest.approx((weights * hit).sum() / weights.sum(), abs=1e-12)
    assert logs["sparse_top_k_categorical_accuracy"] == pytest.approx(
        (weights * in_top).sum() / weights.sum(), abs=1e-12)


@pytest.mark.parametrize("alias,key,cls", [("AUC", "AUC", dnn.metrics.AUC),
                                           ("acc", "acc", dnn.metrics.Accuracy),
                                           ("Accuracy", "Accuracy", dnn.metrics.Accuracy),
                                           ("Precision", "Precision", dnn.metrics.Precision),
                                           ("MAE", "MAE", dnn.metrics.MeanAbsoluteError),
                                           ("mean_absolute_error", "mean_absolute_error",
                                            dnn.metrics.MeanAbsoluteError),
                                           ("BinaryAccuracy", "BinaryAccuracy",
                                            dnn.metrics.BinaryAccuracy)])
def test_keras_metric_aliases_log_under_the_name_given(multilabel, alias, key, cls):
    model, x, y, _, _ = multilabel
    assert type(dnn.metrics.get(alias)) is cls
    assert key in evaluate(model, x, y, [alias])


def test_metrics_save_with_their_class_name_and_weighting(multilabel, tmp_path):
    model, x, y, _, weights = multilabel
    model.compile(loss="binary_crossentropy", optimizer="adam",
                  metrics=["AUC", dnn.metrics.Precision(thresholds=[0.3, 0.7], name="p")],
                  weighted_metrics=["AUC"])
    model.save(tmp_path / "m.npz")
    loaded = dnn.load_model(tmp_path / "m.npz")
    assert [(m.name, m.weighted) for m in loaded.metrics] == [
        ("AUC", False), ("p", False), ("weighted_AUC", True)]
    want = model.evaluate(x, y, sample_weight=weights, return_dict=True)
    assert loaded.evaluate(x, y, sample_weight=weights, return_dict=True) == want


@pytest.mark.parametrize("make,pattern", [
    (lambda: dnn.metrics.Precision(thresholds=[0.5, 1.2]),
     r"Precision: thresholds: expected a number in \[0, 1\]; got 1.2"),
    (lambda: dnn.metrics.Recall(top_k=0), r"Recall: top_k: expected a positive integer"),
    (lambda: dnn.metrics.AUC(curve="PRGAIN"), r"AUC: curve: expected 'ROC' or 'PR'"),
    (lambda: dnn.Sequential([Dense(3, "sigmoid")], input_dim=2).compile(
        "bce", metrics=[dnn.metrics.Precision(class_id=3)]),
     r"class_id: expected an integer in \[0, 3\).*got 3"),
    (lambda: dnn.Sequential([Dense(3, "softmax")], input_dim=2).compile(
        "sparse_categorical_crossentropy", metrics=["precision"]),
     r"'precision' expects targets shaped like the output"),
])
def test_bad_metric_options_are_named(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


# --------------------------------------------------------------------- the habits
def test_evaluate_returns_what_keras_3_returns(use, rng):
    model, x, _ = one_layer("sigmoid", rng, width=1)
    y = rng.integers(0, 2, 50)
    model.compile(loss="bce", optimizer="sgd")
    loss = model.evaluate(x, y)
    assert isinstance(loss, float) and loss == model.evaluate(x, y, return_dict=True)["loss"]
    model.compile(loss="bce", optimizer="sgd", metrics=["accuracy", "AUC"])
    logs = model.evaluate(x, y, return_dict=True)
    assert list(logs) == ["loss", "accuracy", "AUC"]
    assert model.evaluate(x, y) == list(logs.values())


def test_on_batch_methods(use, rng):
    model, x, _ = one_layer("softmax", rng, width=3)
    y = rng.integers(0, 3, 50)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=dnn.optimizers.SGD(0.1),
                  metrics=["acc"])
    twin = dnn.Sequential([Dense(3, "softmax")], input_dim=4, seed=0, dtype="float64")
    twin.set_weights(model.get_weights())
    twin.compile(loss="sparse_categorical_crossentropy", optimizer=dnn.optimizers.SGD(0.1),
                 metrics=["acc"])
    before = model.test_on_batch(x, y, return_dict=True)
    assert before == model.evaluate(x, y, batch_size=50, return_dict=True)
    for step in range(3):
        logs = model.train_on_batch(x, y, return_dict=True)
        assert logs == pytest.approx(twin.evaluate(x, y, batch_size=50, return_dict=True),
                                     rel=1e-12)  # the batch's logs, before its update
        twin.fit(x, y, batch_size=50, epochs=1, shuffle=False, verbose=0)
        for a, b in zip(model.get_weights(), twin.get_weights()):
            numpy.testing.assert_array_equal(a, b)
    assert model.train_steps == 3
    loss, accuracy = model.train_on_batch(x, y)
    numpy.testing.assert_array_equal(model.predict_on_batch(x), model.predict(x))


def test_on_batch_with_weights_and_class_weights(use, rng):
    model, x, _ = one_layer("sigmoid", rng, width=1)
    y = rng.integers(0, 2, 50)
    model.compile(loss="bce", optimizer="sgd")
    twin = dnn.Sequential([Dense(1, "sigmoid")], input_dim=4, seed=0, dtype="float64")
    twin.set_weights(model.get_weights())
    twin.compile(loss="bce", optimizer="sgd")
    model.train_on_batch(x, y, class_weight={0: 1.0, 1: 3.0})
    twin.fit(x, y, batch_size=50, shuffle=False, verbose=0, class_weight={0: 1.0, 1: 3.0})
    for a, b in zip(model.get_weights(), twin.get_weights()):
        numpy.testing.assert_array_equal(a, b)
    w = rng.uniform(0, 1, 50)
    assert model.test_on_batch(x, y, sample_weight=w) == pytest.approx(
        model.evaluate(x, y, sample_weight=w), rel=1e-12)


def test_input_shape_wherever_keras_takes_it(use):
    for model in (dnn.Sequential([Dense(2, input_shape=(5,))]),
                  dnn.Sequential([Dense(2)], input_shape=(5,)),
                  dnn.Sequential([BatchNormalization(input_shape=[5]), Dense(2)]),
                  dnn.Sequential([Activation("relu", input_shape=(5,)), Dense(2)])):
        assert model.built and model.input_dim == 5
    with pytest.raises(ValueError, match=r"Dense: input_shape: expected a tuple of one "
                                         r"positive integer.*got \(5, 2\)"):
        Dense(2, input_shape=(5, 2))
    with pytest.raises(ValueError, match=r"input_shape: expected \(4,\) to agree with "
                                         r"input_dim=4; got \(5,\)"):
        Dense(2, input_dim=4, input_shape=(5,))


def test_train_on_batch_replays_the_captured_step(rng, monkeypatch):
    """Where the backend captures (CUDA graphs), train_on_batch replays fit's captured
    step; on NumPy a replay re-runs the recorded body, so the same path runs here."""
    with dnn.use_backend("numpy") as be:
        monkeypatch.setattr(be, "supports_graphs", True)
        model, x, _ = one_layer("tanh", rng, width=2)
        y = rng.normal(size=(50, 2))
        model.compile(loss="mse", optimizer="adam")
        captures = []
        real = be.capture
        monkeypatch.setattr(be, "capture", lambda fn: captures.append(fn) or real(fn))
        losses = [model.train_on_batch(x, y) for _ in range(4)]
    assert len(captures) == 1  # eager once, captured once, then replayed
    assert losses[0] > losses[-1] and model.train_steps == 4


def test_a_metric_of_several_thresholds_logs_a_list(use, rng, capsys):
    model, x, _ = one_layer("sigmoid", rng, width=1)
    y = rng.integers(0, 2, 50)
    model.compile(loss="bce", optimizer="sgd",
                  metrics=[dnn.metrics.Recall(thresholds=[0.25, 0.75])])
    history = model.fit(x, y, epochs=2, verbose=2)
    assert len(history.history["recall"][-1]) == 2
    assert "recall: [0." in capsys.readouterr().out
    model.evaluate(x, y, verbose=1)
    assert "recall: [" in capsys.readouterr().out
