"""Metrics against NumPy and scikit-learn on the predictions of real models, summed over
several batches on the device."""
import numpy
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

import dnn
from dnn.data import make_moons, make_spirals
from dnn.layers import Dense


@pytest.fixture
def binary(use):
    x, y = make_moons(700, noise=0.4, seed=3)
    model = dnn.Sequential([Dense(8, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=0)
    model.compile(loss="binary_crossentropy", optimizer="adam")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return model, x, y, model.predict(x)[:, 0].astype(numpy.float64)


def keras_auc(scores, labels, num_thresholds=200):
    """Keras' ROC AUC: thresholds evenly over [0, 1] (the ends nudged out by 1e-7),
    confusion counts of ``score > threshold``, trapezoids between the points."""
    thresholds = numpy.concatenate([[-1e-7], numpy.arange(1, num_thresholds - 1)
                                    / (num_thresholds - 1), [1 + 1e-7]])
    positive = labels == 1
    tpr = numpy.array([(scores[positive] > t).sum() for t in thresholds]) / positive.sum()
    fpr = numpy.array([(scores[~positive] > t).sum() for t in thresholds]) / (~positive).sum()
    return float(((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2).sum())


def evaluate_with(model, x, y, metrics):
    model.compile(loss=model.loss, optimizer=model.optimizer, metrics=metrics)
    return model.evaluate(x, y, batch_size=64, return_dict=True)  # 11 batches, the last one short


def test_binary_metrics_match_numpy_and_sklearn(binary):
    model, x, y, scores = binary
    logs = evaluate_with(model, x, y, ["binary_accuracy", "precision", "recall", "auc"])
    predicted = scores > 0.5
    assert logs["binary_accuracy"] == pytest.approx((predicted == y).mean(), abs=1e-12)
    assert logs["precision"] == pytest.approx(precision_score(y, predicted), abs=1e-12)
    assert logs["recall"] == pytest.approx(recall_score(y, predicted), abs=1e-12)
    assert logs["auc"] == pytest.approx(keras_auc(scores, y), abs=1e-6)
    assert logs["auc"] == pytest.approx(roc_auc_score(y, scores), abs=5e-3)
    assert 0.6 < logs["auc"] < 0.99  # a model between chance and perfect
    logs = evaluate_with(model, x, y, [dnn.metrics.Precision(thresholds=0.7),
                                       dnn.metrics.BinaryAccuracy(threshold=0.3)])
    assert logs["precision"] == pytest.approx(precision_score(y, scores > 0.7), abs=1e-12)
    assert logs["binary_accuracy"] == pytest.approx(((scores > 0.3) == y).mean(), abs=1e-12)


def test_auc_with_few_thresholds_is_keras_coarse_curve(binary):
    model, x, y, scores = binary
    logs = evaluate_with(model, x, y, [dnn.metrics.AUC(num_thresholds=5)])
    assert logs["auc"] == pytest.approx(keras_auc(scores, y, 5), abs=1e-6)


def test_metrics_move_as_the_model_learns(use):
    x, y = make_moons(400, noise=0.1, seed=0)
    model = dnn.Sequential([Dense(16, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=0)
    model.compile(loss="binary_crossentropy", optimizer=dnn.optimizers.Adam(0.01),
                  metrics=["auc", "precision", "recall"])
    history = model.fit(x, y, epochs=15, batch_size=32, verbose=0).history
    assert history["auc"][-1] > 0.97 and history["auc"][-1] > history["auc"][0]
    assert history["recall"][-1] > 0.9 and history["precision"][-1] > 0.9


@pytest.fixture
def multiclass(use):
    x, y = make_spirals(600, n_classes=4, noise=0.3, seed=1)
    model = dnn.Sequential([Dense(16, "relu"), Dense(4, "softmax")], input_dim=2, seed=0)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return model, x, y, model.predict(x)


def top_k(probs, labels, k):
    ranks = (probs > probs[numpy.arange(len(labels)), labels][:, None]).sum(axis=1)
    return float((ranks < k).mean())


def test_categorical_metrics_match_numpy(multiclass):
    model, x, y, probs = multiclass
    logs = evaluate_with(model, x, y, ["sparse_categorical_accuracy",
                                       "sparse_top_k_categorical_accuracy"])
    assert logs["sparse_categorical_accuracy"] == pytest.approx(
        (probs.argmax(1) == y).mean(), abs=1e-12)
    assert logs["sparse_top_k_categorical_accuracy"] == 1.0  # k=5 of 4 classes
    logs = evaluate_with(model, x, y, [dnn.metrics.SparseTopKCategoricalAccuracy(k=2)])
    assert logs["sparse_top_k_categorical_accuracy"] == pytest.approx(top_k(probs, y, 2),
                                                                      abs=1e-12)
    assert top_k(probs, y, 1) < logs["sparse_top_k_categorical_accuracy"] < 1


def test_one_hot_metrics_equal_their_sparse_forms(multiclass):
    model, x, y, probs = multiclass
    onehot = numpy.eye(4)[y]
    model.compile(loss="categorical_crossentropy", optimizer=model.optimizer,
                  metrics=["categorical_accuracy", dnn.metrics.TopKCategoricalAccuracy(k=2)])
    logs = model.evaluate(x, onehot, batch_size=64, return_dict=True)
    assert logs["categorical_accuracy"] == pytest.approx((probs.argmax(1) == y).mean(),
                                                         abs=1e-12)
    assert logs["top_k_categorical_accuracy"] == pytest.approx(top_k(probs, y, 2), abs=1e-12)


@pytest.mark.parametrize("metric,loss,pattern", [
    ("auc", "mse", r"auc.*binary_crossentropy"),
    ("precision", "sparse_categorical_crossentropy", r"precision.*binary_crossentropy"),
])
def test_a_metric_that_does_not_fit_the_loss_is_refused_at_compile(use, metric, loss,
                                                                   pattern):
    model = dnn.Sequential([Dense(3, "softmax" if "sparse" in loss else None)],
                           input_dim=2, seed=0)
    with pytest.raises(ValueError, match=pattern):
        model.compile(loss=loss, optimizer="sgd", metrics=[metric])


@pytest.mark.parametrize("make,pattern", [
    (lambda: dnn.metrics.AUC(num_thresholds=1), r"AUC: num_thresholds: expected an integer "
                                                r">= 2; got 1"),
    (lambda: dnn.metrics.Precision(thresholds=1.5), r"Precision: thresholds: expected a "
                                                    r"number in \[0, 1\]; got 1.5"),
    (lambda: dnn.metrics.get("f1"), r"metrics: expected names from .*; got 'f1'"),
    (lambda: dnn.Sequential([Dense(1, "sigmoid")], input_dim=2).compile(
        "binary_crossentropy", metrics=["auc", dnn.metrics.AUC(num_thresholds=50)]),
     r"metrics: expected distinct names; got 'auc' more than once"),
])
def test_bad_metric_arguments_are_named(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def _selecting_model(seed=0):
    """A softmax model whose precision and recall select scores (top_k, class_id), the
    metrics that keep a workspace per batch size."""
    model = dnn.Sequential([Dense(6, "relu"), Dense(3, "softmax")], input_dim=4, seed=seed,
                           dtype="float64")
    model.compile(loss="categorical_crossentropy", optimizer="adam",
                  metrics=[dnn.metrics.Precision(top_k=2), dnn.metrics.Recall(class_id=1)])
    return model


def test_selecting_metrics_keep_their_workspaces_in_the_models_cache():
    """A batch source of ever new batch sizes must not grow a metric's memory: its
    workspaces live in the model's per-batch-size cache, dropped with the steps captured
    on them, so captured replays still count what eager steps count."""
    from dnn.training.buffer_cache import MAX_BATCH_SIZES

    rng = numpy.random.default_rng(0)
    x = rng.normal(size=(90, 4))
    y = numpy.eye(3)[rng.integers(0, 3, 90)]
    sizes = [7, 9, 11, 13, 15, 17, 19, 23, 7, 9]  # more sizes than the cache keeps
    histories = []
    with dnn.use_backend("numpy"):
        for cuda_graph in (False, True):
            model = _selecting_model()
            for size in sizes:
                model.fit(x, y, epochs=1, batch_size=size, shuffle=False, verbose=0,
                          cuda_graph=cuda_graph)
            histories.append([model.evaluate(x, y, batch_size=size, return_dict=True)
                              for size in range(1, 30)])
            assert len(model.buffers.batch_sizes()) <= MAX_BATCH_SIZES
            metric = model.metrics[0]
            assert model.buffers.peek(29, metric) is not None  # the last evaluation's
            assert not any(isinstance(v, dict) for v in vars(metric).values())
    eager, captured = histories
    assert eager == captured
    whole = eager[-1]
    for logs in eager:  # every batch size counts the same rows the same way
        assert logs["precision"] == pytest.approx(whole["precision"], abs=1e-12)
        assert logs["recall"] == pytest.approx(whole["recall"], abs=1e-12)
