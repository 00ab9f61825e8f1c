"""Backend selection, validation at the API boundary, callbacks and layering."""
import numpy
import pytest
from support import python

import dnn
from dnn import backends
from dnn.data import make_moons
from dnn.layers import Dense, Dropout


def small_model(**kw):
    model = dnn.Sequential([Dense(8, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=0, **kw)
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


# ------------------------------------------------------------------ backend selection
def test_registry():
    assert "numpy" in backends.available_backends()
    assert backends.get_backend("numpy") is backends.get_backend("numpy")
    assert backends.get_backend("auto").name in ("numpy", "cupy")
    with pytest.raises(ValueError, match="expected one of auto, numpy, cupy; got 'tpu'"):
        backends.get_backend("tpu")


def test_cupy_missing_says_what_to_install():
    code = ("import sys; sys.modules['cupy'] = None\n"
            "from dnn import backends\n"
            "try:\n    backends.get_backend('cupy')\n"
            "except backends.BackendUnavailable as e:\n    print(e)")
    out = python("-c", code)
    assert "pip install '.[cuda12]'" in out.stdout and "'.[cuda13]'" in out.stdout, out.stderr


def test_cupy_without_a_device_says_so():
    try:
        import cupy  # noqa: F401
    except ImportError:
        pytest.skip("CuPy is not installed")
    why = backends.backend_status()["cupy"]
    if why is None:
        pytest.skip("a CUDA device is usable here")
    assert "no CUDA device is visible" in why
    with pytest.raises(backends.BackendUnavailable, match="no CUDA device is visible"):
        backends.get_backend("cupy")


def test_use_backend_is_scoped_and_set_backend_global():
    numpy_be = backends.get_backend("numpy")
    with dnn.use_backend("numpy") as be:
        assert be is numpy_be and dnn.get_backend() is numpy_be
        model = small_model()
        model.build()
    assert model.backend is numpy_be
    previous = dnn.backend_scope._global
    try:
        dnn.set_backend("numpy")
        assert dnn.get_backend() is numpy_be
    finally:
        dnn.backend_scope._global = previous


def test_env_var_selects_backend_at_build_not_import():
    code = ("import dnn, os; os.environ['DNN_BACKEND'] = 'numpy'; "
            "print(dnn.get_backend().name)")
    out = python("-c", code, env={"DNN_BACKEND": "nonsense"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "numpy"
    bad = python("-c", "import dnn; dnn.get_backend()", env={"DNN_BACKEND": "nonsense"})
    assert "got 'nonsense'" in bad.stderr


# ------------------------------------------------------------------------ validation
@pytest.fixture
def moons():
    return make_moons(64, seed=0)


@pytest.mark.parametrize("mutate,exc,pattern", [
    (lambda x, y: (x[:, :1], y), ValueError, r"expected 2 features .* got 1"),
    (lambda x, y: (x, y[:-3]), ValueError, r"expected 64 targets.*got 61"),
    (lambda x, y: (x, y * 3), ValueError, r"targets in \[0, 1\]; got 3"),
    (lambda x, y: (x.astype(str), y), TypeError, r"x: expected numeric data"),
    (lambda x, y: (numpy.where(numpy.eye(64, 2) > 0, numpy.nan, x), y), ValueError,
     r"x: expected finite values; got nan"),
    (lambda x, y: (x, numpy.where(numpy.arange(64) == 5, numpy.inf, y)), ValueError,
     r"y: expected finite values; got inf at index \(5,\)"),
    (lambda x, y: (x[:0], y[:0]), ValueError, r"x: expected at least one sample"),
    (lambda x, y: (x[:, :, None], y), ValueError, r"x: expected a 2-D array"),
])
def test_fit_rejects_bad_data_clearly(use, moons, mutate, exc, pattern):
    model = small_model()
    model.build()
    x, y = mutate(*moons)
    with pytest.raises(exc, match=pattern):
        model.fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize("labels,pattern", [([0, 1, 3], r"in \[0, 3\).* got label 3"),
                                            ([0, -1, 2], r"in \[0, 3\).* got label -1")])
def test_labels_out_of_range_are_caught_on_every_backend(use, labels, pattern):
    model = dnn.Sequential([Dense(3, "softmax")], input_dim=2, seed=0)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    with pytest.raises(ValueError, match=pattern):
        model.fit(numpy.zeros((3, 2)), numpy.array(labels), verbose=0)


@pytest.mark.parametrize("kwargs,pattern", [
    ({"batch_size": 0}, "batch_size: expected a positive integer; got 0"),
    ({"batch_size": -4}, "batch_size: expected a positive integer; got -4"),
    ({"epochs": -1}, "epochs: expected an integer >= 0; got -1"),
    ({"validation_split": 1.5}, r"validation_split: expected a number in \[0, 1\); got 1.5"),
    ({"cuda_graph": "yes"}, r"cuda_graph: expected 'auto', True or False; got 'yes'"),
])
def test_fit_rejects_bad_arguments(use, moons, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        small_model().fit(*moons, verbose=0, **kwargs)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"activation: expected one of linear, relu.*got 'relux'"):
        Dense(3, "relux")
    model = dnn.Sequential([Dense(1)], input_dim=2)
    with pytest.raises(ValueError, match=r"loss: expected one of mse.*got 'hinge'"):
        model.compile(loss="hinge")
    with pytest.raises(ValueError, match=r"optimizer: expected one of sgd, adam.*got 'lbfgs'"):
        model.compile(loss="mse", optimizer="lbfgs")
    with pytest.raises(ValueError, match=r"metrics: expected names from .*got 'f1'"):
        model.compile(loss="mse", metrics=["f1"])
    with pytest.raises(ValueError, match=r"units: expected a positive integer; got 0"):
        Dense(0)
    with pytest.raises(ValueError, match=r"rate: expected a number in \[0, 1\); got 1.0"):
        Dropout(1.0)


def test_loss_incompatible_with_output_layer(use, moons):
    model = dnn.Sequential([Dense(2, "relu")], input_dim=2)
    with pytest.raises(ValueError, match=r"'sparse_categorical_crossentropy': expected an output "
                                         r"layer with activation 'softmax'.*got activation 'relu'"):
        model.compile(loss="sparse_categorical_crossentropy")
        model.fit(*moons, verbose=0)
    model = dnn.Sequential([Dense(1, "sigmoid")], input_dim=2)
    with pytest.raises(ValueError, match=r"'accuracy' expects a classification loss"):
        model.compile(loss="mse", metrics=["accuracy"])
        model.build()


def test_set_weights_checks_count_and_shapes(use):
    model = small_model()
    model.build()
    w = model.get_weights()
    with pytest.raises(ValueError, match=r"expected 4 arrays.*got 3"):
        model.set_weights(w[:3])
    w[2] = numpy.zeros((3, 1))
    with pytest.raises(ValueError, match=r"weights\[2\] \(Dense\(1, sigmoid\) kernel\): expected "
                                         r"shape \(8, 1\); got \(3, 1\)"):
        model.set_weights(w)


def test_predict_checks_feature_count(use):
    model = small_model()
    model.build()
    with pytest.raises(ValueError, match=r"x: expected 2 features .* got 5"):
        model.predict(numpy.zeros((4, 5)))


def test_not_compiled_or_not_built(use):
    model = dnn.Sequential([Dense(1)])
    with pytest.raises(RuntimeError, match="not compiled"):
        model.fit(numpy.zeros((2, 2)), numpy.zeros(2))
    with pytest.raises(RuntimeError, match="no weights yet"):
        model.get_weights()
    with pytest.raises(ValueError, match="input_dim"):
        model.build()


# ------------------------------------------------------------------ non-finite losses
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # diverging on purpose
def test_divergence_stops_with_epoch_and_step_and_keeps_finite_weights(use):
    x, y = make_moons(256, seed=0)
    model = dnn.Sequential([Dense(16, "relu"), Dense(1)], input_dim=2, seed=0)
    model.compile(loss="mse", optimizer=dnn.optimizers.SGD(learning_rate=1e6))
    with pytest.raises(dnn.NonFiniteLossError, match=r"epoch 1, step \d+/8"):
        model.fit(x, y * 1e3, epochs=3, batch_size=32, verbose=0)
    assert all(numpy.isfinite(w).all() for w in model.get_weights())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # diverging on purpose
def test_weights_that_went_non_finite_are_rolled_back(use):
    """A finite loss with an overflowing gradient leaves inf weights; the next step's
    loss is then non-finite and fit must restore the epoch-start copy."""
    x, y = make_moons(64, seed=0)
    model = dnn.Sequential([Dense(1)], input_dim=2, seed=0)
    model.compile(loss="mse", optimizer=dnn.optimizers.SGD(learning_rate=1e38))
    start = model.build().get_weights()
    with pytest.raises(dnn.NonFiniteLossError, match="restored to the start of epoch 1"):
        model.fit(x, y * 1e10, epochs=1, batch_size=16, verbose=0)
    for a, b in zip(model.get_weights(), start):
        numpy.testing.assert_array_equal(a, b)
    assert model.optimizer.read_iterations() == 0 and model.train_steps == 0


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # diverging on purpose
def test_terminate_on_nan_carries_the_guards_configuration(use):
    """TerminateOnNaN(restore_weights=False) still stops at the first non-finite loss,
    but leaves the weights as the bad steps made them, and says so."""
    x, y = make_moons(64, seed=0)
    model = dnn.Sequential([Dense(1)], input_dim=2, seed=0)
    model.compile(loss="mse", optimizer=dnn.optimizers.SGD(learning_rate=1e38))
    model.build()
    with pytest.raises(dnn.NonFiniteLossError, match=r"non-finite and were left so"):
        model.fit(x, y * 1e10, epochs=1, batch_size=16, verbose=0,
                  callbacks=[dnn.callbacks.TerminateOnNaN(restore_weights=False)])
    assert not all(numpy.isfinite(w).all() for w in model.get_weights())
    with pytest.raises(ValueError, match=r"TerminateOnNaN: restore_weights: expected True "
                                         r"or False; got 'no'"):
        dnn.callbacks.TerminateOnNaN(restore_weights="no")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # diverging on purpose
def test_terminate_on_nan_can_be_switched_off(use):
    x, y = make_moons(64, seed=0)
    model = dnn.Sequential([Dense(1)], input_dim=2, seed=0)
    model.compile(loss="mse", optimizer=dnn.optimizers.SGD(learning_rate=1e30))
    history = model.fit(x, y * 1e30, epochs=2, verbose=0, terminate_on_nan=False)
    assert not numpy.isfinite(history.history["loss"][-1])


def test_clipnorm_bounds_the_update(use):
    """clipnorm bounds each weight's step (Keras), global_clipnorm their joint step."""
    x, y = make_moons(64, seed=0)
    model = dnn.Sequential([Dense(1)], input_dim=2, seed=0)
    model.compile(loss="mse", optimizer=dnn.optimizers.SGD(learning_rate=1.0, clipnorm=0.5))
    before = model.build().get_weights()
    model.fit(x, y * 1e3, epochs=1, batch_size=64, verbose=0)
    for w0, w1 in zip(before, model.get_weights()):  # the kernel and the bias
        numpy.testing.assert_allclose(numpy.linalg.norm(w1 - w0), 0.5, rtol=1e-5)
    model.compile(loss="mse", optimizer=dnn.optimizers.SGD(learning_rate=1.0,
                                                           global_clipnorm=0.5))
    before = numpy.concatenate([w.ravel() for w in model.get_weights()])
    model.fit(x, y * 1e3, epochs=1, batch_size=64, verbose=0)
    after = numpy.concatenate([w.ravel() for w in model.get_weights()])
    numpy.testing.assert_allclose(numpy.linalg.norm(after - before), 0.5, rtol=1e-5)
    model.compile(loss="mse", optimizer=dnn.optimizers.SGD(learning_rate=1.0, clipvalue=0.1))
    before = after
    model.fit(x, y * 1e3, epochs=1, batch_size=64, verbose=0)
    after = numpy.concatenate([w.ravel() for w in model.get_weights()])
    assert numpy.abs(after - before).max() == pytest.approx(0.1, rel=1e-5)


# ------------------------------------------------------------------------ callbacks
def test_early_stopping_restores_best(use):
    x, y = make_moons(200, seed=0)
    model = small_model()
    stop = dnn.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0,
                                       restore_best_weights=True)
    history = model.fit(x, y, epochs=20, verbose=0, callbacks=[stop])
    assert len(history.history["loss"]) == 2 and stop.stopped_epoch == 1


def test_learning_rate_scheduler(use):
    x, y = make_moons(64, seed=0)
    model = small_model()
    seen = []

    def schedule(epoch, lr):
        seen.append(lr)
        return 0.1 / (epoch + 1)

    model.fit(x, y, epochs=3, verbose=0,
              callbacks=[dnn.callbacks.LearningRateScheduler(schedule)])
    assert seen == [0.001, 0.1, 0.05]
    assert model.optimizer.learning_rate == pytest.approx(0.1 / 3)


def test_progress_lines_when_not_a_tty(use, capsys):
    x, y = make_moons(64, seed=0)
    small_model().fit(x, y, epochs=2, verbose=1)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Epoch 1/2 - ") and "loss: " in out[0] and "accuracy: " in out[0]
    assert len(out) == 2
    small_model().fit(x, y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


def test_summary_names_backend_device_and_dtype(use, capsys):
    model = small_model(dtype="float64")
    model.build()
    model.summary()
    out = capsys.readouterr().out
    assert "Dense(8, relu)" in out and "(None, 8)" in out and "Total params: 33" in out
    assert f"Backend: {use.name}" in out and "dtype: float64" in out


@pytest.fixture
def sigint_default():
    """SIGINT as an interactive Python has it, whatever this test process inherited (a
    shell script's background job starts with SIGINT ignored)."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_stops_after_the_step_and_returns_history(use, sigint_default):
    import signal

    x, y = make_moons(320, seed=0)
    model = small_model()

    class PressCtrlC(dnn.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.train_steps == 15:  # epoch 2, step 5
                signal.raise_signal(signal.SIGINT)

    history = model.fit(x, y, epochs=5, batch_size=32, verbose=0, callbacks=[PressCtrlC()])
    assert history.interrupted
    assert model.train_steps == 15 and model.epochs_done == 1
    assert len(history.history["loss"]) == 2  # epoch 1, and the 5 steps of epoch 2
    assert numpy.isfinite(model.predict(x)).all()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    again = model.fit(x, y, epochs=1, verbose=0)  # still usable
    assert not again.interrupted and len(again.history["loss"]) == 1


def test_fit_leaves_an_ignored_ctrl_c_ignored():
    """A run started with SIGINT ignored (a job a shell script starts with &) keeps
    ignoring it."""
    import signal

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        x, y = make_moons(64, seed=0)
        seen = []

        class Look(dnn.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                seen.append(signal.getsignal(signal.SIGINT))
                signal.raise_signal(signal.SIGINT)  # ignored: training goes on

        history = small_model().fit(x, y, epochs=2, batch_size=32, verbose=0,
                                    callbacks=[Look()])
        assert not history.interrupted and len(history.history["loss"]) == 2
        assert seen and all(handler is signal.SIG_IGN for handler in seen)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_every_attribute_is_declared_in_init(use):
    """Training, saving and predicting add no attribute that __init__ did not declare,
    on the model, its layers, its optimizer or its training machinery."""
    def fresh():
        model = dnn.Sequential([Dense(8, "relu"), Dropout(0.1), dnn.layers.Activation("tanh"),
                                Dense(1, "sigmoid")], input_dim=2, seed=0)
        model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
        return model

    declared = fresh()
    names = {"model": set(vars(declared)), "optimizer": set(vars(declared.optimizer)),
             "layers": [set(vars(layer)) for layer in declared.layers]}
    declared.build()
    trainer = declared._trainer
    parts = [set(vars(part)) for part in (trainer, trainer.nan_guard, trainer.captured)]
    model = fresh()
    x, y = make_moons(100, seed=0)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, validation_split=0.2,
              cuda_graph=True)
    model.evaluate(x, y)
    model.predict(x)
    model.loss_and_gradients(x, y, training=True)
    assert set(vars(model)) == names["model"]
    assert set(vars(model.optimizer)) == names["optimizer"]
    assert [set(vars(layer)) for layer in model.layers] == names["layers"]
    trainer = model._trainer
    assert [set(vars(part)) for part in (trainer, trainer.nan_guard, trainer.captured)] == parts


class _FakeModel:
    """Only what EarlyStopping touches: weights, the stop flag, the replica."""

    def __init__(self):
        self.stop_training = False
        self.weights = [numpy.zeros(1)]
        self.replica = dnn.training.replica.LOCAL

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [numpy.array(w) for w in weights]


def _keras_early_stopping(values, patience, min_delta=0.0, baseline=None, start=0):
    """Keras 3's EarlyStopping.on_epoch_end (keras/src/callbacks/early_stopping.py),
    written out for a value to minimise: (epoch stopped at or None, best epoch)."""
    best, wait, best_epoch = float("inf"), 0, 0
    for epoch, value in enumerate(values):
        if epoch < start:
            continue
        wait += 1
        if value - (-min_delta) < best:  # monitor_op(current - min_delta, best), less
            best, best_epoch = value, epoch
            if baseline is None or value + min_delta < baseline:
                wait = 0
            continue
        if wait >= patience and epoch > 0:
            return epoch, best_epoch
    return None, best_epoch


# Keras 3's metric classes and the direction each declares (``self._direction`` in
# keras/src/metrics/accuracy_metrics.py, confusion_metrics.py, regression_metrics.py).
KERAS_DIRECTIONS = {"Accuracy": "up", "BinaryAccuracy": "up", "CategoricalAccuracy": "up",
                    "SparseCategoricalAccuracy": "up", "TopKCategoricalAccuracy": "up",
                    "SparseTopKCategoricalAccuracy": "up", "Precision": "up", "Recall": "up",
                    "AUC": "up", "MeanAbsoluteError": "down"}


def _keras_mode(monitor, metrics):
    """Keras 3's MonitorCallback._set_monitor_op for mode="auto"
    (keras/src/callbacks/monitor_callback.py), written out: "min" for the loss, the
    direction of the model's metric of that name (the "val_" prefix removed), and an
    error where neither tells. ``metrics``: ``[(logged name, class name)]``."""
    name = monitor.removeprefix("val_")
    mode = "min" if name == "loss" else None
    for metric_name, class_name in metrics:
        if metric_name == name:
            mode = "max" if KERAS_DIRECTIONS[class_name] == "up" else "min"
    if mode is None:
        raise ValueError(f"Keras cannot tell the direction of {monitor}")
    return mode


def test_every_metric_goes_the_way_keras_3_says():
    assert {name: cls.direction for name, cls in dnn.metrics.CLASSES.items()} == \
        KERAS_DIRECTIONS


@pytest.mark.parametrize("loss,metrics,weighted", [
    ("binary_crossentropy", ["auc", "AUC", "precision", "Recall", "accuracy", "mae"],
     ["accuracy", "auc"]),
    ("binary_crossentropy", [dnn.metrics.AUC(curve="PR", name="pr_auc"),
                             dnn.metrics.Precision(thresholds=[0.3, 0.7]), "acc",
                             "binary_accuracy"], None),
    ("sparse_categorical_crossentropy", ["sparse_categorical_accuracy",
                                         "sparse_top_k_categorical_accuracy"], None),
    ("mse", ["mae", "mean_absolute_error"], ["MAE"]),
])
def test_auto_mode_follows_the_models_metrics_as_keras_3_does(loss, metrics, weighted):
    """EarlyStopping, ModelCheckpoint(save_best_only) and ReduceLROnPlateau with
    mode="auto" resolve the direction from the model's metric of the monitored name, as
    Keras 3 does: AUC, precision and recall go up (the old name rule minimised them)."""
    units = 3 if loss.startswith("sparse") else 1
    model = dnn.Sequential([Dense(units, "softmax" if units == 3 else "sigmoid")],
                           input_dim=2, seed=0)
    model.compile(loss=loss, optimizer="adam", metrics=metrics, weighted_metrics=weighted)
    logged = [(m.name, type(m).__name__) for m in model.metrics]
    monitors = ["loss", "val_loss"] + [p + name for name, _ in logged for p in ("", "val_")]
    for monitor in monitors:
        for callback in (dnn.callbacks.EarlyStopping(monitor=monitor),
                         dnn.callbacks.ModelCheckpoint("m.npz", monitor=monitor,
                                                       save_best_only=True),
                         dnn.callbacks.ReduceLROnPlateau(monitor=monitor)):
            callback.set_model(model)
            assert callback.direction == _keras_mode(monitor, logged), (monitor, callback)


def test_auto_mode_without_the_metric_on_the_model_falls_back_to_dnns_metric_names():
    """A callback driven by hand (no compiled model), or a name the model does not log:
    the metric dnn has by that name decides, else a name with "acc" is maximised."""
    for monitor, expected in [("val_auc", "max"), ("precision", "max"), ("val_AUC", "max"),
                              ("val_weighted_recall", "max"), ("mae", "min"),
                              ("val_my_acc", "max"), ("val_score", "min"), ("loss", "min")]:
        callback = dnn.callbacks.EarlyStopping(monitor=monitor)
        callback.set_model(_FakeModel())
        assert callback.direction == expected, monitor
    assert dnn.callbacks.EarlyStopping(monitor="val_auc", mode="min").direction == "min"


def test_early_stopping_on_a_rising_auc_keeps_training():
    """Keras 3 stops on val_auc only once it stops rising; the old rule ("auc" has no
    "acc": minimise) stopped at the first rise past patience."""
    model = small_model()
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["auc"])
    stop = dnn.callbacks.EarlyStopping(monitor="val_auc", patience=1)
    stop.set_model(model)
    stop.on_train_begin()
    for epoch, value in enumerate([0.6, 0.7, 0.8, 0.9, 0.9, 0.9]):
        stop.on_epoch_end(epoch, {"val_auc": value})
        if model.stop_training:
            break
    assert stop.stopped_epoch == 4 and stop.best == 0.9


def test_model_checkpoint_best_only_keeps_the_highest_auc(tmp_path):
    model = small_model()
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["auc"])
    checkpoint = dnn.callbacks.ModelCheckpoint(str(tmp_path / "c-{epoch}.npz"),
                                               monitor="val_auc", save_best_only=True)
    checkpoint.set_model(model)
    checkpoint.on_train_begin()
    for epoch, value in enumerate([0.6, 0.7, 0.65, 0.8]):
        checkpoint.on_epoch_end(epoch, {"val_auc": value})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c-1.npz", "c-2.npz", "c-4.npz"]


@pytest.mark.parametrize("values,kwargs", [
    ([5, 4, 4, 4, 4, 4], dict(patience=2)),
    ([5, 4, 4, 4, 4, 4], dict(patience=0)),
    ([5, 4.95, 4.9, 4.85, 1, 1], dict(patience=2, min_delta=0.1)),
    ([5, 4, 3, 2, 1, 0], dict(patience=1, baseline=2.5)),
    ([5, 6, 7, 8, 9, 1], dict(patience=1, start=3)),
    ([3, 2, 1], dict(patience=1)),
], ids=["plateau", "patience 0", "min_delta", "baseline", "start_from_epoch", "improves"])
def test_early_stopping_counts_as_keras_3_does(values, kwargs):
    """Stop epoch and restored weights follow Keras 3's update, value for value."""
    stop_at, best_epoch = _keras_early_stopping(values, **kwargs)
    callback = dnn.callbacks.EarlyStopping(
        monitor="loss", patience=kwargs["patience"], min_delta=kwargs.get("min_delta", 0.0),
        baseline=kwargs.get("baseline"), start_from_epoch=kwargs.get("start", 0),
        restore_best_weights=True)
    model = _FakeModel()
    callback.set_model(model)
    callback.on_train_begin()
    stopped = None
    for epoch, value in enumerate(values):
        model.weights = [numpy.array([float(epoch)])]
        callback.on_epoch_end(epoch, {"loss": value})
        if model.stop_training:
            stopped = epoch
            break
    callback.on_train_end()
    assert stopped == stop_at
    # Restored at the end of training, whether it stopped early or ran its epochs.
    assert model.weights[0][0] == best_epoch


def test_warmup_leaves_every_weight_alone_moving_statistics_included(use):
    model = dnn.Sequential([Dense(8, "relu"), dnn.layers.BatchNormalization(), Dense(1)],
                           input_dim=3, seed=0)
    model.compile(loss="mse", optimizer="adam")
    before = model.get_weights()
    model.warmup()
    for a, b in zip(before, model.get_weights()):
        numpy.testing.assert_array_equal(a, b)


def test_a_model_whose_first_layer_knows_its_width_is_built_once(use, monkeypatch):
    import dnn.model as model_module

    built = []
    parameters = model_module.Parameters
    monkeypatch.setattr(model_module, "Parameters",
                        lambda *a, **k: built.append(1) or parameters(*a, **k))
    model = dnn.Sequential([Dense(8, "relu", input_dim=3)] +
                           [Dense(8, "relu") for _ in range(10)] + [Dense(1)], seed=0)
    assert model.built and len(built) == 1
    same = dnn.Sequential([Dense(8, "relu")] + [Dense(8, "relu") for _ in range(10)] +
                          [Dense(1)], input_dim=3, seed=0)
    for a, b in zip(model.get_weights(), same.get_weights()):
        numpy.testing.assert_array_equal(a, b)
