"""dtype="mixed_bfloat16": float32 weights, gradients and optimizer state; bfloat16
activations and GEMM inputs (float32 accumulation); the loss in float32."""
import numpy
import pytest

import dnn
from dnn.data import Standardizer, load_digits, make_spirals, train_test_split
from dnn.layers import Dense, Dropout

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = numpy.dtype(ml_dtypes.bfloat16)


def spiral_model(dtype, seed=0):
    model = dnn.Sequential([Dense(64, "relu"), Dropout(0.1), Dense(64, "tanh"),
                            Dense(3, "softmax")], input_dim=2, seed=seed, dtype=dtype)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=dnn.optimizers.Adam(0.01),
                  metrics=["accuracy"])
    return model


def test_mixed_policy_trains_with_float32_master_weights(use):
    x, y = make_spirals(900, 3, seed=0)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, seed=0, stratify=True)
    model = spiral_model("mixed_bfloat16")
    model.fit(x_tr, y_tr, epochs=100, batch_size=32, verbose=0)
    assert model.evaluate(x_te, y_te, return_dict=True)["accuracy"] >= 0.95
    assert model.dtype == numpy.float32 and model.compute_dtype == BF16
    assert all(w.dtype == numpy.float32 for w in model.get_weights())
    assert model.optimizer.get_state()["m"].dtype == numpy.float32
    # the layers compute with the bfloat16 rounding of the current master weights
    kernel = model.get_weights()[0]
    numpy.testing.assert_array_equal(use.to_numpy(model.layers[0].params[0]),
                                     kernel.astype(BF16))
    assert model.predict(x_te).dtype == numpy.float32


def test_mixed_gradients_are_float32_and_close_to_full_precision(use, rng):
    x = rng.normal(size=(16, 2))
    y = rng.integers(0, 3, 16)
    grads = {}
    for dtype in ("float32", "mixed_bfloat16"):
        model = spiral_model(dtype, seed=3)
        loss, grads[dtype] = model.loss_and_gradients(x, y)
    for full, mixed in zip(grads["float32"], grads["mixed_bfloat16"]):
        assert mixed.dtype == numpy.float32
        rel = numpy.linalg.norm(full - mixed) / numpy.linalg.norm(full)
        assert rel < 3e-2  # bfloat16 keeps 8 bits of mantissa
        assert rel > 0  # and it really computed in bfloat16


def test_mixed_policy_on_digits(use):
    x, y = load_digits() if _has_sklearn() else make_spirals(1500, 3, seed=1)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, seed=0, stratify=True)
    scaler = Standardizer().fit(x_tr)
    model = dnn.Sequential([Dense(128, "relu"), Dense(int(y.max()) + 1, "softmax")],
                           input_dim=x.shape[1], seed=0, dtype="mixed_bfloat16")
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(scaler.transform(x_tr), y_tr, epochs=30, batch_size=64, verbose=0)
    assert model.evaluate(scaler.transform(x_te), y_te, return_dict=True)["accuracy"] >= 0.94


def _has_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def test_mixed_policy_saves_and_resumes(use, tmp_path):
    x, y = make_spirals(300, 3, seed=2)
    model = spiral_model("mixed_bfloat16")
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = dnn.load_model(tmp_path / "m.npz")
    assert loaded.dtype_policy == "mixed_bfloat16" and loaded.compute_dtype == BF16
    numpy.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_unknown_dtype_lists_the_mixed_policy():
    with pytest.raises(ValueError, match=r"expected one of float32, float64, mixed_bfloat16; "
                                         r"got 'float16'"):
        dnn.Sequential([Dense(1)], input_dim=2, dtype="float16")


def test_mixed_policy_captured_step_matches_eager(use):
    x, y = make_spirals(300, 3, seed=5)
    weights = []
    for graph in (False, True):
        model = spiral_model("mixed_bfloat16", seed=1)
        model.fit(x, y, epochs=2, batch_size=64, verbose=0, cuda_graph=graph)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        if use.supports_graphs:
            numpy.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
        else:
            numpy.testing.assert_array_equal(a, b)
