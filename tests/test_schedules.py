"""Learning-rate schedules (Keras 3's) and ReduceLROnPlateau: their values, that every
optimizer follows them step by step, that they save and resume, and that changing the
rate never captures the training step again."""
import math

import numpy
import pytest

import dnn
from dnn.callbacks import Callback, ReduceLROnPlateau
from dnn.data import make_moons
from dnn.layers import Dense
from dnn.optimizers.schedules import (CosineDecay, CosineDecayRestarts, ExponentialDecay,
                                      InverseTimeDecay, PiecewiseConstantDecay,
                                      PolynomialDecay)


def test_exponential_decay_values():
    smooth = ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    stairs = ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
    for step in (0, 1, 5, 10, 15, 20, 1000):
        assert smooth(step) == pytest.approx(0.1 * 0.5 ** (step / 10), rel=1e-15)
        assert stairs(step) == pytest.approx(0.1 * 0.5 ** (step // 10), rel=1e-15)


def test_piecewise_constant_values_change_after_each_boundary():
    schedule = PiecewiseConstantDecay(boundaries=[3, 10], values=[0.3, 0.2, 0.1])
    assert [schedule(s) for s in (0, 3, 4, 10, 11, 500)] == [0.3, 0.3, 0.2, 0.2, 0.1, 0.1]


def test_cosine_decay_with_and_without_warmup_follows_keras():
    plain = CosineDecay(0.1, decay_steps=20, alpha=0.1)
    for step in (0, 5, 10, 20, 30):
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, 20) / 20))
        assert plain(step) == pytest.approx(0.1 * (0.9 * cosine + 0.1), rel=1e-14)
    warm = CosineDecay(0.0, decay_steps=20, warmup_target=0.2, warmup_steps=5)
    assert [warm(s) for s in (0, 1, 5)] == pytest.approx([0.0, 0.04, 0.2], rel=1e-14)
    assert warm(15) == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 10 / 20)), rel=1e-14)
    assert warm(25) == warm(1000) == pytest.approx(0.0, abs=1e-17)


def test_polynomial_decay_values_with_and_without_cycles():
    held = PolynomialDecay(0.1, decay_steps=10, end_learning_rate=0.01, power=2.0)
    for step in (0, 3, 10, 25):
        want = (0.1 - 0.01) * (1 - min(step, 10) / 10) ** 2 + 0.01
        assert held(step) == pytest.approx(want, rel=1e-15)
    cycling = PolynomialDecay(0.1, decay_steps=10, end_learning_rate=0.01, cycle=True)
    # decay_steps stretches to the first multiple of 10 at or above the step (10 at 0)
    assert [cycling(s) for s in (0, 10, 15, 20)] == pytest.approx(
        [0.1, 0.01, 0.09 * (1 - 15 / 20) + 0.01, 0.01], rel=1e-14)


def test_inverse_time_decay_values():
    smooth = InverseTimeDecay(0.1, decay_steps=4, decay_rate=0.5)
    stairs = InverseTimeDecay(0.1, decay_steps=4, decay_rate=0.5, staircase=True)
    for step in (0, 1, 4, 7, 100):
        assert smooth(step) == pytest.approx(0.1 / (1 + 0.5 * step / 4), rel=1e-15)
        assert stairs(step) == pytest.approx(0.1 / (1 + 0.5 * (step // 4)), rel=1e-15)


def test_cosine_decay_restarts_start_each_period_again():
    """Periods of 10, 20, 40 steps (t_mul=2), period i's cosine scaled by m_mul**i,
    and alpha the floor as a fraction of the initial rate (Keras)."""
    sgdr = CosineDecayRestarts(0.1, first_decay_steps=10, m_mul=0.5, alpha=0.1)

    def rate(restart, fraction):
        return 0.1 * (0.9 * 0.5 * 0.5 ** restart * (1 + math.cos(math.pi * fraction)) + 0.1)

    assert [sgdr(s) for s in (0, 10, 20, 30, 50)] == pytest.approx(
        [rate(0, 0), rate(1, 0), rate(1, 0.5), rate(2, 0), rate(2, 0.5)], rel=1e-12)
    flat = CosineDecayRestarts(0.1, first_decay_steps=10, t_mul=1.0)
    assert flat(15) == pytest.approx(flat(5), rel=1e-14) and flat(10) == pytest.approx(0.1)


@pytest.mark.parametrize("make,pattern", [
    (lambda: ExponentialDecay(0.1, 0, 0.5), r"ExponentialDecay: decay_steps: expected a "
                                            r"finite number > 0; got 0"),
    (lambda: PiecewiseConstantDecay([3, 10], [0.1, 0.2]),
     r"PiecewiseConstantDecay: values: expected one more value than boundaries \(3\); got 2"),
    (lambda: PiecewiseConstantDecay([10, 3], [0.3, 0.2, 0.1]), r"boundaries: expected "
                                                               r"increasing steps"),
    (lambda: CosineDecay(0.1, 10, alpha=2), r"CosineDecay: alpha: expected a number in "
                                            r"\[0, 1\]; got 2"),
    (lambda: CosineDecay(0.0, 10, warmup_target=0.1), r"CosineDecay: warmup_steps: "
                                                      r"expected > 0 with a warmup_target"),
])
def test_bad_schedule_arguments_are_named(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def linear_model(optimizer, seed=0):
    model = dnn.Sequential([Dense(1)], input_dim=3, seed=seed, dtype="float64")
    model.compile(loss="mse", optimizer=optimizer)
    return model


def test_each_update_uses_the_rate_of_the_steps_taken_before_it(use, rng):
    """Update k (1-based) moves the weights by schedule(k - 1) times the gradient, as
    Keras evaluates a schedule at optimizer.iterations."""
    schedule = PiecewiseConstantDecay([1, 3], [0.1, 0.01, 0.001])
    model = linear_model(dnn.optimizers.SGD(learning_rate=schedule))
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 1))
    for step in range(6):
        assert model.optimizer.current_learning_rate() == schedule(step)
        before = model.get_weights()
        _, grads = model.loss_and_gradients(x, y)
        model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
        for w0, w1, g in zip(before, model.get_weights(), grads):
            numpy.testing.assert_allclose(w0 - w1, schedule(step) * g, rtol=1e-10)


@pytest.mark.parametrize("name", sorted(dnn.optimizers.OPTIMIZERS))
def test_every_optimizer_takes_a_schedule_and_a_constant_schedule_is_the_constant(use, rng,
                                                                                   name):
    x, y = rng.normal(size=(32, 3)), rng.normal(size=(32, 1))
    constant = PiecewiseConstantDecay([5], [0.01, 0.01])
    plain = linear_model(dnn.optimizers.get(name, learning_rate=0.01))
    scheduled = linear_model(dnn.optimizers.get(name, learning_rate=constant))
    for model in (plain, scheduled):
        model.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    for a, b in zip(plain.get_weights(), scheduled.get_weights()):
        numpy.testing.assert_array_equal(a, b)


def test_a_schedule_is_saved_and_a_resume_continues_it(use, tmp_path):
    x, y = make_moons(256, noise=0.2, seed=0)

    def model():
        m = dnn.Sequential([Dense(8, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=4)
        m.compile(loss="binary_crossentropy", optimizer=dnn.optimizers.AdamW(
            CosineDecay(1e-3, 40, warmup_target=1e-2, warmup_steps=8), weight_decay=1e-3))
        return m

    straight = model()
    straight.fit(x, y, epochs=4, batch_size=32, verbose=0)
    first = model()
    first.fit(x, y, epochs=2, batch_size=32, verbose=0)
    first.save(tmp_path / "half.npz")
    resumed = dnn.load_model(tmp_path / "half.npz")
    assert isinstance(resumed.optimizer.learning_rate, CosineDecay)
    assert resumed.optimizer.current_learning_rate() == first.optimizer.current_learning_rate()
    resumed.fit(x, y, epochs=4, initial_epoch=2, batch_size=32, verbose=0)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        numpy.testing.assert_array_equal(a, b)


def test_a_scheduled_rate_cannot_be_set_by_hand(use):
    model = linear_model(dnn.optimizers.SGD(ExponentialDecay(0.1, 10, 0.9)))
    with pytest.raises(TypeError, match="follows ExponentialDecay"):
        model.optimizer.learning_rate = 0.5


# ------------------------------------------------------------------- no re-capture
class _SetRate(Callback):
    def __init__(self, rates):
        self.rates = rates

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = self.rates[epoch]


def _count_captures(model, monkeypatch):
    count = [0]
    capture = model.backend.capture

    def counting(fn):
        count[0] += 1
        return capture(fn)

    monkeypatch.setattr(model.backend, "capture", counting)
    return count


@pytest.mark.parametrize("optimizer", [
    lambda: dnn.optimizers.Adam(learning_rate=CosineDecay(0.01, 30, warmup_target=0.05,
                                                          warmup_steps=5)),
    lambda: dnn.optimizers.Adam(learning_rate=0.01),  # set by hand every epoch
], ids=["schedule", "set by hand"])
def test_a_changing_rate_replays_one_captured_step(use, monkeypatch, optimizer):
    x, y = make_moons(256, noise=0.2, seed=0)
    rates = [0.01, 0.003, 0.001, 0.0003]
    results = []
    for cuda_graph in (False, True):
        model = dnn.Sequential([Dense(8, "relu"), Dense(1, "sigmoid")], input_dim=2, seed=4)
        model.compile(loss="binary_crossentropy", optimizer=optimizer())
        count = _count_captures(model, monkeypatch)
        callbacks = [] if model.optimizer.scheduled else [_SetRate(rates)]
        model.fit(x, y, epochs=4, batch_size=64, verbose=0, cuda_graph=cuda_graph,
                  callbacks=callbacks)
        assert count[0] == int(cuda_graph)  # 4 batches of 64: one shape, one capture
        results.append(model.get_weights())
    tol = dict(rtol=1e-5, atol=1e-7) if use.name == "cupy" else dict(rtol=0, atol=0)
    for a, b in zip(*results):
        numpy.testing.assert_allclose(a, b, **tol)


# ------------------------------------------------------------------ ReduceLROnPlateau
class _FakeModel:
    def __init__(self, rate):
        self.optimizer = dnn.optimizers.SGD(learning_rate=rate)


def _drive(callback, values, rate=1.0, monitor="val_loss"):
    callback.set_model(_FakeModel(rate))
    callback.on_train_begin()
    rates = []
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, {monitor: value})
        rates.append(callback.model.optimizer.learning_rate)
    return rates


def test_reduce_on_plateau_waits_patience_epochs_then_cools_down():
    """Keras' bookkeeping: a cooldown epoch is counted down at the start of the epoch
    it covers, so cooldown=2 leaves one epoch unwatched after a cut."""
    callback = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=2, min_lr=0.2)
    rates = _drive(callback, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    # epoch:          0    1    2 cut 3 cool 4    5 cut 6 best 7   8 cut  9    10   11
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2]


def test_reduce_on_plateau_watches_accuracy_upwards():
    rates = _drive(ReduceLROnPlateau(monitor="val_accuracy", factor=0.1, patience=1),
                   [0.5, 0.6, 0.6], monitor="val_accuracy")
    assert rates == pytest.approx([1.0, 1.0, 0.1])


@pytest.mark.parametrize("monitor", ["val_auc", "val_precision", "recall"])
def test_reduce_on_plateau_watches_auc_precision_and_recall_upwards(monitor):
    """Keras 3 maximises them (their metrics' direction is "up"); the old name rule
    minimised them and cut the rate while they rose."""
    rates = _drive(ReduceLROnPlateau(monitor=monitor, factor=0.1, patience=1),
                   [0.5, 0.6, 0.7, 0.7], monitor=monitor)
    assert rates == pytest.approx([1.0, 1.0, 1.0, 0.1])


def test_reduce_on_plateau_in_fit_lowers_the_rate_the_model_saves(use, rng, tmp_path):
    x, y = rng.normal(size=(32, 3)), rng.normal(size=(32, 1))
    model = linear_model(dnn.optimizers.SGD(learning_rate=1e-12))  # the loss cannot move
    model.fit(x, y, epochs=6, batch_size=32, verbose=0,
              callbacks=[ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2)])
    assert model.optimizer.learning_rate == pytest.approx(0.25e-12)
    model.save(tmp_path / "m.npz")
    assert dnn.load_model(tmp_path / "m.npz").optimizer.learning_rate == \
        pytest.approx(0.25e-12)


def test_reduce_on_plateau_refuses_a_schedule_and_a_missing_monitor(use, rng):
    x, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 1))
    model = linear_model(dnn.optimizers.SGD(ExponentialDecay(0.1, 10, 0.9)))
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau: the optimizer's learning_rate: "
                                         r"expected a number it can change; got "
                                         r"ExponentialDecay"):
        model.fit(x, y, verbose=0, callbacks=[ReduceLROnPlateau()])
    model = linear_model("sgd")
    with pytest.raises(ValueError, match=r"monitor: expected one of \['loss'\]; got "
                                         r"'val_loss'"):
        model.fit(x, y, verbose=0, callbacks=[ReduceLROnPlateau()])
