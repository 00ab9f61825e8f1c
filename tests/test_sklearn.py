"""dnn.sklearn: scikit-learn's own estimator checks, and the uses people reach for
(pipelines in a parallel grid search, cross-validation, clone, pickling, string labels,
DataFrames, multi-label targets, partial_fit and warm starts)."""
import os
import pickle
import re
import subprocess
import sys
import warnings

import numpy
import pytest

import dnn
from dnn import backends

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.compose import TransformedTargetRegressor  # noqa: E402
from sklearn.datasets import load_diabetes, make_blobs, make_regression  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MultiLabelBinarizer, StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from dnn.sklearn import DNNClassifier, DNNRegressor  # noqa: E402
from support import NEUTRAL_DIR, ROOT  # noqa: E402

CUPY = pytest.param("cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(
    backends.backend_status()["cupy"] is not None,
    reason=str(backends.backend_status()["cupy"]))])


# ------------------------------------------------------------ scikit-learn's checks
def _run_in_subprocess(estimator, check):
    """Run ``check(estimator)`` in a fresh Python with SCIPY_ARRAY_API=1, which SciPy
    reads once, at import (this process imported it long ago)."""
    script = ("import pickle, sys; estimator, check = pickle.load(sys.stdin.buffer); "
              "check(estimator)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SCIPY_ARRAY_API"] = "1"
    out = subprocess.run([sys.executable, "-c", script], input=pickle.dumps((estimator, check)),
                         capture_output=True, cwd=NEUTRAL_DIR, env=env, timeout=300)
    assert out.returncode == 0, out.stderr.decode()[-3000:]


@parametrize_with_checks([DNNClassifier(), DNNRegressor()])
def test_scikit_learn_estimator_check(estimator, check):
    name = getattr(check, "func", check).__name__
    if name.startswith("check_array_api") and os.environ.get("SCIPY_ARRAY_API") != "1":
        _run_in_subprocess(estimator, check)
    else:
        check(estimator)


def test_no_expected_failures_in_the_tags():
    for estimator in (DNNClassifier(), DNNRegressor()):
        tags = estimator.__sklearn_tags__()
        assert not getattr(tags, "_xfail_checks", None)
        assert not tags.classifier_tags or not tags.classifier_tags.poor_score
        assert not tags.regressor_tags or not tags.regressor_tags.poor_score


def test_import_dnn_does_not_import_scikit_learn():
    code = ("import sys, dnn; assert 'sklearn' not in sys.modules, 'import dnn imported it'; "
            "import dnn.sklearn; assert 'sklearn' in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=NEUTRAL_DIR)
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------ the done-when
def readme_grid_search():
    """The Python block of the README's scikit-learn section."""
    heading = "## scikit-learn estimators"
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_grid_search_in_a_parallel_pipeline_reaches_095():
    code = readme_grid_search()
    assert "n_jobs=2" in code and "make_pipeline(StandardScaler(), DNNClassifier(" in code
    namespace = {"print": lambda *args: None}
    exec(code, namespace)
    search = namespace["search"]
    # measured: 0.972 (hidden (64,), dropout 0.2)
    assert search.score(namespace["x_test"], namespace["y_test"]) >= 0.95
    best = search.best_estimator_[-1]
    assert best.hidden_layer_sizes == search.best_params_["dnnclassifier__hidden_layer_sizes"]
    assert best.n_features_in_ == 30 and best.classes_.tolist() == [0, 1]


def test_diabetes_cross_val_score():
    x, y = load_diabetes(return_X_y=True)
    regressor = TransformedTargetRegressor(
        make_pipeline(StandardScaler(), DNNRegressor(random_state=0)),
        transformer=StandardScaler())
    scores = cross_val_score(regressor, x, y, cv=3)
    # measured: 0.459, 0.393, 0.477 (mean 0.443)
    assert scores.mean() >= 0.35, scores


# ------------------------------------------------------------------ estimator rules
def _blobs(n=120, centers=3, seed=0):
    x, y = make_blobs(n_samples=n, centers=centers, n_features=4, random_state=seed)
    return StandardScaler().fit_transform(x), y


def test_clone_of_a_fitted_estimator_is_unfitted_with_the_same_parameters():
    x, y = _blobs()
    fitted = DNNClassifier(hidden_layer_sizes=(8, 8), epochs=5, random_state=1).fit(x, y)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "model_") and not hasattr(copy, "classes_")
    with pytest.raises(NotFittedError):
        copy.predict(x)


def test_set_params_then_fit_uses_the_new_values():
    x, y = _blobs()
    model = DNNClassifier(epochs=3, random_state=0).set_params(hidden_layer_sizes=(7, 5),
                                                               dropout=0.2, batch_norm=True)
    model.fit(x, y)
    names = [type(layer).__name__ for layer in model.model_.layers]
    assert names == ["Dense", "BatchNormalization", "Dropout"] * 2 + ["Dense"]
    assert [layer.units for layer in model.model_.layers if hasattr(layer, "units")] == \
        [7, 5, 3]


class _Globals(pickle.Unpickler):
    """An unpickler that records the module of every class or function it loads."""

    def __init__(self, data):
        import io
        super().__init__(io.BytesIO(data))
        self.modules = set()

    def find_class(self, module, name):
        self.modules.add(module)
        return super().find_class(module, name)


@pytest.mark.parametrize("estimator", [DNNClassifier, DNNRegressor])
def test_pickle_round_trip_predicts_the_same_and_carries_no_dnn_objects(estimator):
    x, y = _blobs()
    if estimator is DNNRegressor:
        y = x @ numpy.arange(1.0, 5.0)
    fitted = estimator(hidden_layer_sizes=(16,), epochs=20, random_state=0).fit(x, y)
    data = pickle.dumps(fitted)
    unpickler = _Globals(data)
    restored = unpickler.load()
    dnn_modules = {m for m in unpickler.modules if m.split(".")[0] == "dnn"}
    # The estimator's own classes only: the network travels as a model file's bytes.
    assert estimator.__module__ in dnn_modules
    assert all(m.startswith("dnn.sklearn.") for m in dnn_modules), dnn_modules
    numpy.testing.assert_array_equal(restored.predict(x), fitted.predict(x))
    assert isinstance(restored.model_, dnn.Sequential)
    assert restored.history_ == fitted.history_
    # The optimizer state travels too: one more epoch each gives the same weights.
    for model in (fitted, restored):
        model.partial_fit(x, y)
    for a, b in zip(fitted.model_.get_weights(), restored.model_.get_weights()):
        numpy.testing.assert_array_equal(a, b)


def test_joblib_round_trip(tmp_path):
    joblib = pytest.importorskip("joblib")
    x, y = _blobs()
    fitted = DNNClassifier(epochs=5, random_state=0).fit(x, y)
    joblib.dump(fitted, tmp_path / "model.joblib")
    restored = joblib.load(tmp_path / "model.joblib")
    numpy.testing.assert_array_equal(restored.predict_proba(x), fitted.predict_proba(x))


def test_string_labels():
    x, y = _blobs()
    names = numpy.array(["cat", "dog", "fish"])[y]
    model = DNNClassifier(hidden_layer_sizes=(16,), random_state=0).fit(x, names)
    assert model.classes_.tolist() == ["cat", "dog", "fish"]
    predicted = model.predict(x)
    assert set(predicted) <= {"cat", "dog", "fish"}
    assert (predicted == names).mean() > 0.95
    proba = model.predict_proba(x)
    numpy.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)], predicted)
    binary = DNNClassifier(epochs=50, random_state=0).fit(x[y < 2], names[y < 2])
    assert binary.predict_proba(x).shape == (len(x), 2)
    assert set(binary.predict(x)) <= {"cat", "dog"}


def test_dataframe_with_column_names():
    pandas = pytest.importorskip("pandas")
    x, y = _blobs()
    frame = pandas.DataFrame(x, columns=["height", "width", "depth", "mass"])
    model = DNNClassifier(epochs=20, random_state=0).fit(frame, pandas.Series(y))
    assert model.feature_names_in_.tolist() == ["height", "width", "depth", "mass"]
    assert model.n_features_in_ == 4
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        unnamed = model.predict(x)
    numpy.testing.assert_array_equal(model.predict(frame), unnamed)
    with pytest.raises(ValueError, match="feature names"):
        model.predict(frame.rename(columns={"mass": "weight"}))


def test_multilabel_targets_from_a_multilabel_binarizer():
    x, _ = _blobs(n=200)
    tags = [["a"] if row[0] > 0 else [] for row in x]
    tags = [t + (["b"] if row[1] > 0 else []) + (["c"] if row[0] + row[1] > 0 else [])
            for t, row in zip(tags, x)]
    y = MultiLabelBinarizer().fit_transform(tags)
    model = DNNClassifier(hidden_layer_sizes=(32,), batch_size=32, random_state=0).fit(x, y)
    assert model.n_outputs_ == 3
    assert model.predict(x).shape == y.shape and model.predict(x).dtype == y.dtype
    proba = model.predict_proba(x)
    assert proba.shape == y.shape and ((0 <= proba) & (proba <= 1)).all()
    assert model.score(x, y) > 0.85  # subset accuracy


def test_regressor_with_several_targets():
    x, y = make_regression(n_samples=150, n_features=5, n_targets=2, noise=1.0,
                           random_state=0)
    y = StandardScaler().fit_transform(y)
    model = DNNRegressor(hidden_layer_sizes=(32,), batch_size=32, random_state=0).fit(x, y)
    assert model.predict(x).shape == (150, 2)
    assert model.score(x, y) > 0.9


# ------------------------------------------------------- partial_fit and warm_start
def test_partial_fit_needs_the_classes_first_and_then_continues():
    x, y = _blobs()
    model = DNNClassifier(hidden_layer_sizes=(16,), random_state=0)
    with pytest.raises(ValueError, match="classes"):
        model.partial_fit(x, y)
    model.partial_fit(x[:40], y[:40], classes=[0, 1, 2])
    assert model.n_iter_ == 1 and model.classes_.tolist() == [0, 1, 2]
    for _ in range(30):
        model.partial_fit(x, y)
    assert model.n_iter_ == 31 and len(model.history_["loss"]) == 31
    assert model.history_["loss"][-1] < model.history_["loss"][1]
    with pytest.raises(ValueError, match="classes"):
        model.partial_fit(x, y, classes=[0, 1])
    with pytest.raises(ValueError, match="labels among classes_"):
        model.partial_fit(x, y + 5)


def test_warm_start_continues_and_a_cold_fit_starts_anew():
    x, y = _blobs()
    cold = DNNClassifier(hidden_layer_sizes=(16,), epochs=10, tol=None, random_state=0)
    first = cold.fit(x, y).predict_proba(x)
    numpy.testing.assert_array_equal(cold.fit(x, y).predict_proba(x), first)
    assert cold.n_iter_ == 10

    warm = clone(cold).set_params(warm_start=True).fit(x, y)
    network = warm.model_
    warm.fit(x, y)
    assert warm.model_ is network and warm.n_iter_ == 20 and len(warm.history_["loss"]) == 20
    longer = clone(cold).set_params(epochs=20).fit(x, y)
    # Ten epochs then ten more are twenty epochs.
    numpy.testing.assert_allclose(warm.predict_proba(x), longer.predict_proba(x), rtol=1e-12)


def test_early_stopping_holds_out_a_validation_split_and_stops():
    # Overlapping classes: the validation loss stops improving long before 500 epochs.
    x, y = make_blobs(n_samples=300, centers=3, n_features=4, cluster_std=4, random_state=0)
    model = DNNClassifier(hidden_layer_sizes=(64,), epochs=500, batch_size=32,
                          early_stopping=True, patience=5, random_state=0)
    model.fit(StandardScaler().fit_transform(x), y)
    assert set(model.history_) == {"loss", "val_loss"}
    assert model.n_iter_ < 500 and len(model.history_["val_loss"]) == model.n_iter_


def test_training_loss_tolerance_stops_a_converged_fit():
    x, y = _blobs()
    model = DNNRegressor(hidden_layer_sizes=(8,), epochs=2000, tol=1e-2, patience=2,
                         random_state=0).fit(x, y.astype(float))
    assert model.n_iter_ < 2000
    everything = DNNRegressor(hidden_layer_sizes=(8,), epochs=30, tol=None,
                              random_state=0).fit(x, y.astype(float))
    assert everything.n_iter_ == 30


# ------------------------------------------------------------------ other options
def _builder(n_features, n_outputs, output_activation, seed, dtype):
    from dnn.layers import BatchNormalization, Dense, LayerNormalization

    return dnn.Sequential([Dense(32, "gelu"), LayerNormalization(), Dense(16, "relu"),
                           BatchNormalization(), Dense(n_outputs, output_activation)],
                          input_dim=n_features, seed=seed, dtype=dtype)


def test_a_model_builder_for_networks_beyond_a_dense_stack():
    x, y = _blobs()
    model = DNNClassifier(model=_builder, random_state=0).fit(x, y)
    assert [type(layer).__name__ for layer in model.model_.layers] == \
        ["Dense", "LayerNormalization", "Dense", "BatchNormalization", "Dense"]
    assert model.score(x, y) > 0.95
    restored = pickle.loads(pickle.dumps(model))
    numpy.testing.assert_array_equal(restored.predict_proba(x), model.predict_proba(x))


def test_a_model_builder_with_the_wrong_output_is_refused():
    x, y = _blobs()

    def two_outputs(n_features, n_outputs, output_activation, **kw):
        return dnn.Sequential([dnn.layers.Dense(2, "softmax")], input_dim=n_features, **kw)

    with pytest.raises(ValueError, match="model: expected a Sequential from 4 inputs to 3"):
        DNNClassifier(model=two_outputs).fit(x, y)
    with pytest.raises(TypeError, match="model: expected a callable that returns a dnn"):
        DNNClassifier(model=lambda **kw: "no").fit(x, y)


@pytest.mark.parametrize("name, value, message", [
    ("epochs", 0, "epochs: expected a positive integer; got 0"),
    ("hidden_layer_sizes", (10, -1), "hidden_layer_sizes: expected a positive integer"),
    ("dropout", 1.0, r"dropout: expected a number in \[0, 1\); got 1.0"),
    ("batch_size", "big", "batch_size"),
    ("validation_fraction", 0, "validation_fraction: expected a number in"),
    ("dtype", "int8", "dtype: expected None"),
    # a name dnn has no optimizer for; the error lists those it has
    ("optimizer", "lbfgs", re.escape(f"DNNClassifier: optimizer: expected one of "
                                     f"{', '.join(dnn.optimizers.OPTIMIZERS)} or a "
                                     f"dnn.optimizers.Optimizer; got 'lbfgs'")),
    ("activation", "swish", "activation: expected one of"),
    ("callbacks", [print], "callbacks: expected None or a list of dnn.callbacks.Callback"),
])
def test_bad_parameters_are_named_when_fit_starts(name, value, message):
    x, y = _blobs(n=30)
    model = DNNClassifier(**{name: value})  # stored as given: no error yet
    assert model.get_params()[name] == value
    with pytest.raises(ValueError, match=message):
        model.fit(x, y)


@pytest.mark.parametrize("name", list(dnn.optimizers.OPTIMIZERS))
def test_every_dnn_optimizer_trains_by_name(name):
    x, y = _blobs(n=30)
    model = DNNClassifier(optimizer=name, epochs=1, random_state=0).fit(x, y)
    assert type(model.model_.optimizer) is dnn.optimizers.OPTIMIZERS[name]


def test_sample_and_class_weights():
    x, y = _blobs()
    with pytest.raises(ValueError, match="sample_weight: expected weights >= 0"):
        DNNClassifier(epochs=2).fit(x, y, sample_weight=-numpy.ones(len(y)))
    with pytest.raises(ValueError, match="at least one non-zero weight"):
        DNNClassifier(epochs=2).fit(x, y, sample_weight=numpy.zeros(len(y)))
    # All the weight on class 0 makes a classifier that says class 0.
    skewed = DNNClassifier(epochs=50, random_state=0,
                           class_weight={0: 1000.0, 1: 1e-4, 2: 1e-4}).fit(x, y)
    assert (skewed.predict(x) == 0).mean() > 0.9
    balanced = DNNClassifier(epochs=50, random_state=0, class_weight="balanced").fit(x, y)
    assert balanced.score(x, y) > 0.95


def test_callbacks_are_dnn_callbacks_copied_at_each_fit():
    x, y = _blobs()
    callback = dnn.callbacks.ReduceLROnPlateau(monitor="loss", patience=1)
    model = DNNClassifier(epochs=5, random_state=0, callbacks=[callback]).fit(x, y)
    assert model.get_params()["callbacks"][0] is callback
    assert not hasattr(callback, "model")  # the fit bound a copy


def test_float32_data_trains_in_float32_unless_told():
    x, y = _blobs()
    assert DNNClassifier(epochs=2).fit(x.astype(numpy.float32), y).predict_proba(x).dtype \
        == numpy.float32
    assert DNNClassifier(epochs=2).fit(x, y).predict_proba(x).dtype == numpy.float64
    assert DNNClassifier(epochs=2, dtype="float32").fit(x, y).predict_proba(x).dtype \
        == numpy.float32


def test_one_class_is_refused_with_the_count():
    x, y = _blobs()
    with pytest.raises(ValueError, match="expected at least 2 classes; got 1 class"):
        DNNClassifier().fit(x, numpy.zeros(len(x)))


@pytest.mark.parametrize("backend_name", ["numpy", CUPY])
def test_estimators_on_a_chosen_backend(backend_name):
    x, y = _blobs()
    model = DNNClassifier(hidden_layer_sizes=(32,), random_state=0, backend=backend_name,
                          dtype="float32").fit(x, y)
    assert model.model_.backend.name == backend_name
    assert model.score(x, y) > 0.95
    restored = pickle.loads(pickle.dumps(model))
    assert restored.model_.backend.name == backend_name
    numpy.testing.assert_array_equal(restored.predict(x), model.predict(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = cross_val_score(
            DNNRegressor(hidden_layer_sizes=(16,), backend=backend_name, random_state=0),
            x, x[:, 0] - x[:, 1], cv=3)
    assert scores.min() > 0.9
