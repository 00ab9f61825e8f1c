"""The float64 NumPy-against-CuPy parity run (tests/test_gpu.py) and the tolerance it
is held to, which tests/test_parity_tolerance.py derives on the CPU.

Two backends compute the same float64 step with every reduction (GEMMs, column sums,
the losses' partial sums, the row sums of softmax and LayerNormalization) in its own
order and with their own exp/log/tanh, each correct to an ulp or two. After 48 AdamW
steps through BatchNormalization and LayerNormalization those rounding differences
stay below ``MEASURED_BOUND`` (relative; weights and predictions with a floor of
``WEIGHT_FLOOR``) on the CPU when the same run is repeated with the inner dimension of
every GEMM permuted, every column sum reversed, and the inputs moved by one ulp
(test_parity_tolerance.py); the GPU test allows 100 times that.
"""
import numpy

import dnn
from dnn.data import make_moons, make_spirals
from dnn.layers import Dense, Dropout

MEASURED_BOUND = 1e-11  # the CPU emulation's worst relative difference, rounded up
WEIGHT_FLOOR = 1e-10  # weights near 0: compared absolutely below this
HISTORY_TOL = dict(rtol=100 * MEASURED_BOUND, atol=1e-12)
WEIGHT_TOL = dict(rtol=100 * MEASURED_BOUND, atol=WEIGHT_FLOOR)
TASKS = ("binary", "multiclass")


def task_data(task):
    """``(x, y, sample weights, loss, output units, metrics)`` of a parity task."""
    if task == "binary":
        x, y = make_moons(400, noise=0.3, seed=0)
        loss = dnn.losses.BinaryCrossentropy(label_smoothing=0.1)
        units, metrics = 1, ["binary_accuracy", "precision", "recall", "auc"]
    else:
        x, y = make_spirals(400, 4, seed=0)
        loss = dnn.losses.SparseCategoricalCrossentropy(label_smoothing=0.1)
        units, metrics = 4, ["sparse_categorical_accuracy",
                             dnn.metrics.SparseTopKCategoricalAccuracy(k=2)]
    x = x * [30.0, 0.5] + [100.0, -3.0]
    w = numpy.random.default_rng(0).uniform(0.5, 2.0, len(x))
    return x, y, w, loss, units, metrics


def deep_model(x_train, loss, units, metrics):
    """Every kernel of issue 12: normalization layers, penalties, label smoothing,
    sample weights, device metrics, the scheduled rate; float64."""
    from dnn.layers import BatchNormalization, LayerNormalization, Normalization
    from dnn.optimizers.schedules import CosineDecay

    norm = Normalization(input_dim=x_train.shape[1])
    model = dnn.Sequential([
        norm, Dense(32, "relu", kernel_initializer="he_normal", kernel_regularizer="l2"),
        BatchNormalization(), Dropout(0.2), Dense(32, "gelu", bias_regularizer="l1"),
        LayerNormalization(), Dense(units, "sigmoid" if units == 1 else "softmax")],
        seed=3, dtype="float64")
    norm.adapt(x_train)
    model.compile(loss=loss, optimizer=dnn.optimizers.AdamW(
        CosineDecay(1e-3, 60, warmup_target=5e-3, warmup_steps=6), weight_decay=1e-3),
        metrics=metrics)
    return model


def train(task, backend, x=None):
    """``(history, weights, predictions)`` after 6 epochs of 8 steps (48) on ``backend``;
    ``x`` replaces the task's inputs (a perturbed copy)."""
    x0, y, w, loss, units, metrics = task_data(task)
    x = x0 if x is None else x
    with dnn.use_backend(backend):
        model = deep_model(x, loss, units, metrics)
        history = model.fit(x, y, epochs=6, batch_size=40, verbose=0, sample_weight=w,
                            validation_split=0.2).history
        return history, model.get_weights(), model.predict(x)


def assert_parity(got, want, history_tol=HISTORY_TOL, weight_tol=WEIGHT_TOL):
    (h_got, w_got, p_got), (h_want, w_want, p_want) = got, want
    assert h_got.keys() == h_want.keys()
    for key in h_want:
        numpy.testing.assert_allclose(h_got[key], h_want[key], err_msg=key, **history_tol)
    for a, b in zip(w_got, w_want):
        numpy.testing.assert_allclose(a, b, **weight_tol)
    numpy.testing.assert_allclose(p_got, p_want, **weight_tol)
