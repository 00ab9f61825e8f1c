"""Accuracy on real tasks with fixed seeds."""
import numpy
import pytest

import dnn
from dnn.data import (
    Standardizer,
    make_circles,
    make_moons,
    make_spirals,
    make_student,
    make_xor,
    train_test_split,
)
from dnn.layers import Dense


def seed002_model(seed):
    """Seed 002's network: 2-4-6-6-4-1, ReLU hidden layers, sigmoid output."""
    model = dnn.Sequential([Dense(4, "relu"), Dense(6, "relu"), Dense(6, "relu"),
                            Dense(4, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=seed)
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def test_seed002_circles_median_accuracy(use):
    x, y = make_circles(1000, factor=0.5, noise=0.08, seed=0)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.1, seed=0)
    accs = []
    for seed in range(5):
        model = seed002_model(seed)
        history = model.fit(x_tr, y_tr, epochs=50, batch_size=32, verbose=0)
        assert len(history.history["loss"]) == 50
        accs.append(model.evaluate(x_te, y_te, return_dict=True)["accuracy"])
    assert numpy.median(accs) >= 0.97, accs


@pytest.mark.parametrize("hidden,threshold_ok", [(None, False), ("relu", True)])
def test_xor_needs_a_nonlinearity(use, hidden, threshold_ok):
    x, y = make_xor(400, noise=0.15, seed=0)
    model = dnn.Sequential([Dense(8, hidden), Dense(8, hidden), Dense(1, "sigmoid")],
                           input_dim=2, seed=0)
    model.compile(loss="binary_crossentropy", optimizer=dnn.optimizers.Adam(0.01),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=60, batch_size=32, verbose=0)
    acc = model.evaluate(x, y, return_dict=True)["accuracy"]
    if threshold_ok:
        assert acc == 1.0
    else:
        assert acc <= 0.75


def _student(regression):
    x, y = make_student(1000, regression=regression, seed=0)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, seed=0)
    scaler = Standardizer().fit(x_tr)
    return scaler.transform(x_tr), scaler.transform(x_te), y_tr, y_te


def test_student_pass_fail_beats_majority_class(use):
    x_tr, x_te, y_tr, y_te = _student(False)
    model = dnn.Sequential([Dense(16, "relu"), Dense(8, "relu"), Dense(1, "sigmoid")],
                           input_dim=3, seed=0)
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x_tr, y_tr, epochs=40, batch_size=32, verbose=0)
    majority = max(y_te.mean(), 1 - y_te.mean())
    acc = model.evaluate(x_te, y_te, return_dict=True)["accuracy"]
    assert acc >= 0.9 and acc >= majority + 0.15, (acc, majority)


def test_student_score_regression_beats_constant(use):
    x_tr, x_te, y_tr, y_te = _student(True)
    model = dnn.Sequential([Dense(32, "relu"), Dense(16, "relu"), Dense(1)], input_dim=3, seed=0)
    model.compile(loss="mse", optimizer=dnn.optimizers.Adam(0.01), metrics=["mae"])
    model.fit(x_tr, y_tr, epochs=60, batch_size=32, verbose=0)
    mse = model.evaluate(x_te, y_te, return_dict=True)["loss"]
    constant = ((y_te - y_tr.mean()) ** 2).mean()
    assert mse < 0.25 * constant, (mse, constant)
    pred = model.predict(x_te)
    assert pred.shape == (len(x_te), 1)


def test_moons(use):
    """Noise 0.2 puts the Bayes accuracy near 0.97, so take the median of 5 seeds."""
    x, y = make_moons(1000, noise=0.2, seed=0)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, seed=0)
    accs = []
    for seed in range(5):
        model = dnn.Sequential([Dense(16, "relu"), Dense(16, "relu"), Dense(1, "sigmoid")],
                               input_dim=2, seed=seed)
        model.compile(loss="binary_crossentropy", optimizer=dnn.optimizers.Adam(0.01),
                      metrics=["accuracy"])
        model.fit(x_tr, y_tr, epochs=40, batch_size=32, verbose=0)
        accs.append(model.evaluate(x_te, y_te, return_dict=True)["accuracy"])
    assert numpy.median(accs) >= 0.97, accs


def test_three_arm_spirals(use):
    x, y = make_spirals(900, n_classes=3, noise=0.2, seed=0)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, seed=0, stratify=True)
    model = dnn.Sequential([Dense(64, "relu"), Dense(64, "relu"), Dense(3, "softmax")],
                           input_dim=2, seed=0)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=dnn.optimizers.Adam(0.01),
                  metrics=["accuracy"])
    model.fit(x_tr, y_tr, epochs=150, batch_size=32, verbose=0)
    assert model.evaluate(x_te, y_te, return_dict=True)["accuracy"] >= 0.95
    probs = model.predict(x_te)
    numpy.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_learns_moons(use, opt):
    x, y = make_moons(400, noise=0.1, seed=1)
    model = dnn.Sequential([Dense(16, "tanh"), Dense(2, "softmax")], input_dim=2, seed=0)
    kwargs = {"learning_rate": 0.1, "momentum": 0.9} if opt == "sgd" else {"learning_rate": 0.01}
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=dnn.optimizers.get(opt, **kwargs), metrics=["accuracy"])
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    assert model.evaluate(x, y, return_dict=True)["accuracy"] >= 0.85


def test_one_hot_categorical_matches_sparse(use):
    x, y = make_spirals(300, 3, seed=2)
    results = []
    for loss, target in [("sparse_categorical_crossentropy", y),
                         ("categorical_crossentropy", dnn.data.one_hot(y, 3))]:
        model = dnn.Sequential([Dense(16, "relu"), Dense(3, "softmax")], input_dim=2, seed=0)
        model.compile(loss=loss, optimizer="adam", metrics=["accuracy"])
        results.append(model.fit(x, target, epochs=3, verbose=0).history)
    numpy.testing.assert_allclose(results[0]["loss"], results[1]["loss"], rtol=1e-5)
    assert results[0]["accuracy"] == results[1]["accuracy"]


def test_fit_is_reproducible_and_validation_is_reported(use):
    x, y = make_moons(300, seed=3)
    histories = []
    for _ in range(2):
        model = dnn.Sequential([Dense(8, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=7)
        model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
        histories.append(model.fit(x, y, epochs=3, validation_split=0.2, verbose=0).history)
    assert histories[0] == histories[1]
    assert set(histories[0]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 for v in histories[0].values())


def test_digits(use):
    pytest.importorskip("sklearn")
    x, y = dnn.data.load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, seed=0, stratify=True)
    scaler = Standardizer().fit(x_tr)
    model = dnn.Sequential([Dense(128, "relu"), dnn.layers.Dropout(0.2), Dense(10, "softmax")],
                           input_dim=64, seed=0)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(scaler.transform(x_tr), y_tr, epochs=40, batch_size=32, verbose=0)
    assert model.evaluate(scaler.transform(x_te), y_te, return_dict=True)["accuracy"] >= 0.96


@pytest.mark.parametrize("opt", ["adam", "sgd", "rmsprop"])
def test_captured_step_path_matches_eager_steps(use, opt):
    """fit(cuda_graph=True) runs full batches through Backend.capture/replay (a CUDA
    graph on CuPy, a re-run elsewhere) and the last partial batch eagerly; the weights
    must match an eager run (bitwise where a replay re-runs the step, to float32
    rounding on a GPU). A learning-rate change between epochs forces a new capture."""
    x, y = make_spirals(300, 3, seed=4)
    weights = []
    for graph in (False, True):
        model = dnn.Sequential([Dense(32, "relu"), dnn.layers.Dropout(0.1), Dense(32, "gelu"),
                                Dense(3, "softmax")], input_dim=2, seed=5)
        model.compile(loss="sparse_categorical_crossentropy", optimizer=opt,
                      metrics=["accuracy"])
        schedule = dnn.callbacks.LearningRateScheduler(lambda e, lr: 1e-3 * (0.5 ** e))
        h = model.fit(x, y, epochs=3, batch_size=64, verbose=0, cuda_graph=graph,
                      callbacks=[schedule])
        weights.append((model.get_weights(), h.history))
    (w_eager, h_eager), (w_graph, h_graph) = weights
    exact = not use.supports_graphs
    for a, b in zip(w_eager, w_graph):
        if exact:
            numpy.testing.assert_array_equal(a, b)
        else:
            numpy.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    numpy.testing.assert_allclose(h_eager["loss"], h_graph["loss"], rtol=1e-6 if exact else 1e-5)
    assert h_eager["accuracy"] == h_graph["accuracy"] or not exact


def test_recompiling_with_another_optimizer_retraces_the_step(use):
    """Captured steps point at the optimizer's buffers: compile must drop them."""
    x, y = make_moons(256, seed=2)
    model = dnn.Sequential([Dense(8, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=0)
    model.compile(loss="binary_crossentropy", optimizer="adam")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, cuda_graph=True)
    model.compile(loss="binary_crossentropy", optimizer=dnn.optimizers.SGD(0.1, momentum=0.9))
    twin = dnn.Sequential([Dense(8, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=0)
    twin.compile(loss="binary_crossentropy", optimizer=dnn.optimizers.SGD(0.1, momentum=0.9))
    twin.build()
    twin.set_weights(model.get_weights())
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, cuda_graph=True)
    twin.fit(x, y, epochs=2, batch_size=32, verbose=0, cuda_graph=False)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        numpy.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert model.optimizer.read_iterations() == 16


@pytest.mark.parametrize("k", [3, 4, 100])
def test_steps_per_execution_replays_k_steps_that_equal_single_steps(use, k):
    """K steps captured as one body (gathering their own batches at a cursor in device
    memory) give the weights, losses and metrics of one step at a time: exactly where a
    replay re-runs the body, to float32 rounding on a GPU. 300 samples in batches of 32
    are 9 full steps (3 bodies of 3, or 2 of 4 and one left over, or none of 100) and a
    partial one; dropout keys its masks on the device step count."""
    x, y = make_spirals(300, 3, seed=6)
    results = []
    for steps_per_execution, graph in ((1, False), (k, True)):
        model = dnn.Sequential([Dense(32, "relu"), dnn.layers.Dropout(0.1), Dense(3, "softmax")],
                               input_dim=2, seed=2)
        model.compile(loss="sparse_categorical_crossentropy", optimizer="adam",
                      metrics=["accuracy"], steps_per_execution=steps_per_execution)
        h = model.fit(x, y, epochs=3, batch_size=32, verbose=0, cuda_graph=graph)
        results.append((model.get_weights(), h.history, model.train_steps))
    (w1, h1, s1), (wk, hk, sk) = results
    assert s1 == sk == 30
    exact = not use.supports_graphs
    for a, b in zip(w1, wk):
        if exact:
            numpy.testing.assert_array_equal(a, b)
        else:
            numpy.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    numpy.testing.assert_allclose(h1["loss"], hk["loss"], rtol=0 if exact else 1e-5)
    numpy.testing.assert_allclose(h1["accuracy"], hk["accuracy"], atol=0 if exact else 0.01)


def test_steps_per_execution_reports_progress_and_stops_between_bodies(use):
    x, y = make_moons(320, seed=1)
    model = dnn.Sequential([Dense(8, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=0)
    model.compile(loss="binary_crossentropy", optimizer="adam", steps_per_execution=4)
    seen = []

    class Stop(dnn.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((batch, logs["seen"]))
            if batch >= 5:
                self.model.stop_training = True

    h = model.fit(x, y, epochs=3, batch_size=32, verbose=0, cuda_graph=True, callbacks=[Stop()])
    assert seen[0] == (3, 128) and seen[1] == (7, 256)  # one report per body of 4 steps
    assert model.train_steps == 8 and len(h.history["loss"]) == 1


def test_steps_per_execution_is_checked_and_saved(use, tmp_path):
    model = dnn.Sequential([Dense(1, "sigmoid")], input_dim=2, seed=0)
    with pytest.raises(ValueError, match="steps_per_execution: expected a positive integer; "
                                         "got 0"):
        model.compile(loss="binary_crossentropy", steps_per_execution=0)
    model.compile(loss="binary_crossentropy", steps_per_execution=8)
    model.build()
    model.save(tmp_path / "m.npz")
    assert dnn.load_model(tmp_path / "m.npz").steps_per_execution == 8
