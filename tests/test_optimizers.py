"""Every optimizer and every option of Keras 3's apply against Keras 3's update written in
NumPy (tests/keras_optimizers.py), in float64 to 1e-12, over several steps with a
changing rate (a schedule, or the rate set between epochs as ReduceLROnPlateau sets it);
then the configs, the legacy formula of old files, and the errors."""
import numpy
import pytest

import dnn
from dnn.callbacks import Callback
from dnn.layers import Dense
from dnn.optimizers import schedules

import keras_optimizers as keras

ROWS, BATCH, EPOCHS = 24, 8, 3  # three steps an epoch, nine in all
RATES = [0.05, 0.02, 0.004]  # the rate of each epoch, set by hand
NAMES = ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]


def data(seed=0):
    rng = numpy.random.default_rng(seed)
    return rng.normal(size=(ROWS, 3)), rng.normal(size=(ROWS, 2)) * 2


def gradients(weights, x, y):
    """The mean squared error's gradients of the linear model Dense(4) -> Dense(2)."""
    w1, b1, w2, b2 = weights
    h = x @ w1 + b1
    dpred = 2 * (h @ w2 + b2 - y) / y.size
    dh = dpred @ w2.T
    return [x.T @ dh, dh.sum(0), h.T @ dpred, dpred.sum(0)]


class SetRate(Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = RATES[epoch]


def run_dnn(optimizer, x, y):
    model = dnn.Sequential([Dense(4), Dense(2)], input_dim=3, seed=7, dtype="float64")
    model.compile(loss="mse", optimizer=optimizer)
    start = [w.copy() for w in model.get_weights()]
    callbacks = [] if model.optimizer.scheduled else [SetRate()]
    model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, shuffle=False, verbose=0,
              callbacks=callbacks)
    return start, model


def run_keras(name, start, x, y, rate, args, options):
    """Keras' loop: fit's batches in order, the rate set at each epoch, the weights'
    average given to them at the end of fit."""
    variables = [w.copy() for w in start]
    opt = keras.OPTIMIZERS[name](variables, NAMES, rate if callable(rate) else RATES[0],
                                 **options, **args)
    for epoch in range(EPOCHS):
        if not callable(rate):
            opt.learning_rate = RATES[epoch]
        for lo in range(0, ROWS, BATCH):
            opt.apply(gradients(variables, x[lo:lo + BATCH], y[lo:lo + BATCH]))
    opt.finalize_variable_values()
    return variables


def assert_matches_keras(name, args, options, schedule=None):
    x, y = data()
    keras_schedule = None
    if schedule is not None:
        schedule, keras_schedule = schedule
    rate = schedule if schedule is not None else RATES[0]
    dnn_options = {k: v for k, v in options.items() if k != "weight_decay" or v is not None}
    start, model = run_dnn(dnn.optimizers.get(name, learning_rate=rate, **args,
                                              **dnn_options), x, y)
    want = run_keras(name, start, x, y, keras_schedule or RATES[0], args,
                     {**({"weight_decay": 0.004} if name == "adamw" else {}), **options})
    moved = max(numpy.abs(w - w0).max() for w, w0 in zip(want, start))
    assert moved > 1e-3, "the weights hardly moved: the test would not see a difference"
    for got, expected, path in zip(model.get_weights(), want, NAMES):
        numpy.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, err_msg=path)


RULES = [("sgd", {}), ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.9, "nesterov": True}),
         ("rmsprop", {}), ("rmsprop", {"momentum": 0.9}),
         ("rmsprop", {"centered": True, "momentum": 0.5}), ("adam", {}),
         ("adam", {"amsgrad": True}), ("adamw", {}), ("nadam", {}), ("adagrad", {}),
         ("adamax", {}), ("lion", {"beta_1": 0.95})]
RULE_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in a.items())}" for n, a in RULES]


@pytest.mark.parametrize("name,args", RULES, ids=RULE_IDS)
def test_each_optimizer_computes_what_keras_3_computes_as_the_rate_changes(use, name, args):
    assert_matches_keras(name, args, {})


SCHEDULES = {
    "exponential": (schedules.ExponentialDecay(0.05, 3, 0.5),
                    keras.exponential_decay(0.05, 3, 0.5)),
    "polynomial": (schedules.PolynomialDecay(0.05, 6, 0.001, power=2.0, cycle=True),
                   keras.polynomial_decay(0.05, 6, 0.001, power=2.0, cycle=True)),
    "inverse_time": (schedules.InverseTimeDecay(0.05, 2, 0.7, staircase=True),
                     keras.inverse_time_decay(0.05, 2, 0.7, staircase=True)),
    "cosine_restarts": (schedules.CosineDecayRestarts(0.05, 3, t_mul=1.5, m_mul=0.7, alpha=0.1),
                        keras.cosine_decay_restarts(0.05, 3, t_mul=1.5, m_mul=0.7, alpha=0.1)),
}


@pytest.mark.parametrize("name,args", RULES, ids=RULE_IDS)
def test_each_optimizer_follows_a_schedule_as_keras_3(use, name, args):
    assert_matches_keras(name, args, {}, SCHEDULES["polynomial"])


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_the_new_schedules_drive_momentum_sgd_as_in_keras_3(use, schedule):
    assert_matches_keras("sgd", {"momentum": 0.9}, {}, SCHEDULES[schedule])


OPTIONS = {
    "weight_decay": {"weight_decay": 0.05},
    "weight_decay_but_biases": {"weight_decay": 0.05, "exclude_from_weight_decay": ["bias"]},
    "weight_decay_but_a_layer": {"weight_decay": 0.05,
                                 "exclude_from_weight_decay": ["dense_1/"]},
    "clipnorm": {"clipnorm": 0.05},
    "global_clipnorm": {"global_clipnorm": 0.05},
    "clipvalue": {"clipvalue": 0.02},
    "ema": {"use_ema": True, "ema_momentum": 0.8},
    "ema_overwritten": {"use_ema": True, "ema_momentum": 0.7, "ema_overwrite_frequency": 2},
    "accumulation": {"gradient_accumulation_steps": 2},
    "everything": {"gradient_accumulation_steps": 2, "clipnorm": 0.05, "weight_decay": 0.05,
                   "exclude_from_weight_decay": ["bias"], "use_ema": True,
                   "ema_overwrite_frequency": 2},
}
OPTION_RULES = [("sgd", {"momentum": 0.9, "nesterov": True}), ("rmsprop", {"momentum": 0.5}),
                ("adam", {}), ("nadam", {}), ("adagrad", {}), ("adamax", {}), ("lion", {})]


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("name,args", OPTION_RULES, ids=[n for n, _ in OPTION_RULES])
def test_every_option_of_keras_apply_as_keras_3(use, name, args, option):
    assert_matches_keras(name, args, OPTIONS[option], SCHEDULES["exponential"]
                         if option in ("accumulation", "everything") else None)


@pytest.mark.parametrize("name,args", [("adam", {"amsgrad": True}), ("rmsprop",
                                                                     {"centered": True})])
def test_the_rules_extra_state_under_every_option(use, name, args):
    assert_matches_keras(name, args, OPTIONS["everything"], SCHEDULES["cosine_restarts"])


# ------------------------------------------------------------ weights by name
def test_weights_are_named_as_keras_names_them(use):
    model = dnn.Sequential([Dense(4), Dense(3, name="head"), Dense(2)], input_dim=3)
    assert [path for path, _, _ in model.weights.segments] == [
        "dense/kernel", "dense/bias", "head/kernel", "head/bias", "dense_2/kernel",
        "dense_2/bias"]


def test_an_excluded_weight_keeps_its_value_without_a_gradient(use):
    """With zero gradients, weight decay alone moves the weights: every one but the
    excluded ones shrinks by 1 - lr * wd per step."""
    optimizer = dnn.optimizers.SGD(0.1, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_names=["bias", "dense_1/"])
    model = dnn.Sequential([Dense(4, bias_initializer="ones"), Dense(2)], input_dim=3, seed=1)
    model.compile(loss="mse", optimizer=optimizer)
    before = model.get_weights()
    model.fit(numpy.zeros((4, 3)), model.predict(numpy.zeros((4, 3))), epochs=1,
              batch_size=4, verbose=0)
    after = model.get_weights()
    numpy.testing.assert_allclose(after[0], before[0] * 0.95, rtol=1e-6)
    for i in (1, 2, 3):
        numpy.testing.assert_array_equal(after[i], before[i])


def test_exclusions_are_configured_before_the_build_and_by_name():
    model = dnn.Sequential([Dense(2)], input_dim=3)
    model.compile(loss="mse", optimizer="adamw")
    with pytest.raises(ValueError, match=r"AdamW: exclude_from_weight_decay\(\) can only be "
                                         r"configured before the optimizer is built"):
        model.optimizer.exclude_from_weight_decay(var_names=["bias"])
    with pytest.raises(TypeError, match="var_list: dnn's weights are views"):
        dnn.optimizers.AdamW().exclude_from_weight_decay(var_list=[object()])


# ------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", sorted(dnn.optimizers.OPTIMIZERS))
def test_a_config_makes_the_same_optimizer(name):
    optimizer = dnn.optimizers.get(name, learning_rate=schedules.InverseTimeDecay(0.1, 5, 0.5),
                                   clipnorm=1.0, use_ema=True, ema_overwrite_frequency=3,
                                   gradient_accumulation_steps=2,
                                   exclude_from_weight_decay=["bias"])
    config = optimizer.get_config()
    assert config["formula"] == "keras3"
    again = dnn.optimizers.get(config)
    assert again.get_config() == config and type(again) is type(optimizer)


def test_a_config_without_a_formula_is_an_old_file_s_and_resumes_its_formula():
    old = {"name": "sgd", "learning_rate": 0.1, "clipnorm": 1.0, "clipvalue": None,
           "weight_decay": 0.01, "momentum": 0.9, "nesterov": False}
    optimizer = dnn.optimizers.get(old)
    assert optimizer.legacy and optimizer.state_names == ("velocity",)
    assert not optimizer.capturable  # its joint clip norm allocates
    assert dnn.optimizers.get(optimizer.get_config()).legacy
    assert not dnn.optimizers.get({"name": "nadam"}).legacy  # no old file holds one


def test_the_legacy_formula_is_the_old_one(use, rng):
    """Old files' SGD: v = m v + g (L2 decay added to g); w -= lr v."""
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    model = dnn.Sequential([Dense(2)], input_dim=3, seed=0, dtype="float64")
    model.compile(loss="mse", optimizer=dnn.optimizers.SGD(
        0.1, momentum=0.9, weight_decay=0.01, formula="legacy"))
    weights, velocity = model.get_weights(), None
    for _ in range(3):
        _, grads = model.loss_and_gradients(x, y)
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
        grads = [g + 0.01 * w for g, w in zip(grads, weights)]
        velocity = grads if velocity is None else [0.9 * v + g for v, g in zip(velocity, grads)]
        weights = [w - 0.1 * v for w, v in zip(weights, velocity)]
    for got, want in zip(model.get_weights(), weights):
        numpy.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make", [
    lambda: dnn.optimizers.Nadam(gradient_accumulation_steps=2, clipnorm=0.5),
    lambda: dnn.optimizers.Adam(amsgrad=True, use_ema=True, ema_overwrite_frequency=2),
    lambda: dnn.optimizers.RMSprop(centered=True, momentum=0.5, global_clipnorm=1.0),
    lambda: dnn.optimizers.Adagrad(weight_decay=0.01, exclude_from_weight_decay=["bias"]),
], ids=["nadam", "amsgrad-ema", "centered", "adagrad"])
def test_a_resumed_run_continues_bitwise(use, tmp_path, make):
    x, y = data(3)

    def model():
        m = dnn.Sequential([Dense(4, "tanh"), Dense(2)], input_dim=3, seed=2)
        m.compile(loss="mse", optimizer=make())
        return m

    straight = model()
    straight.fit(x, y, epochs=4, batch_size=BATCH, verbose=0)
    first = model()
    first.fit(x, y, epochs=2, batch_size=BATCH, verbose=0)
    first.save(tmp_path / "half.npz")
    resumed = dnn.load_model(tmp_path / "half.npz")
    assert resumed.optimizer.get_config() == first.optimizer.get_config()
    resumed.fit(x, y, epochs=4, initial_epoch=2, batch_size=BATCH, verbose=0)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        numpy.testing.assert_array_equal(a, b)


def test_a_captured_step_clips_per_weight_and_replays_as_the_eager_one(use):
    x, y = data(4)
    results = []
    for cuda_graph in (False, True):
        model = dnn.Sequential([Dense(4, "relu"), Dense(2)], input_dim=3, seed=4)
        model.compile(loss="mse", optimizer=dnn.optimizers.Adam(
            0.01, clipnorm=0.1, use_ema=True, gradient_accumulation_steps=2))
        model.fit(x, y * 100, epochs=3, batch_size=BATCH, verbose=0, cuda_graph=cuda_graph)
        results.append(model.get_weights())
    tol = dict(rtol=1e-5, atol=1e-7) if use.name == "cupy" else dict(rtol=0, atol=0)
    for a, b in zip(*results):
        numpy.testing.assert_allclose(a, b, **tol)


def test_skipped_steps_change_nothing_of_keras_apply(use):
    """A set skip flag (the NaN guard's) leaves weights, state and count alone."""
    be = use
    opt = dnn.optimizers.Nadam(gradient_accumulation_steps=2, clipnorm=0.1, use_ema=True,
                               weight_decay=0.1)
    opt.build(be, 32, numpy.dtype("float64"), [("d/kernel", 0, 16), ("d/bias", 16, 16)])
    params, grads = be.asarray(numpy.ones(32)), be.asarray(numpy.full(32, 0.5))
    opt.apply_gradients(params, grads)
    before = {k: v.copy() for k, v in opt.get_state().items()}, be.to_numpy(params).copy()
    opt.apply_gradients(params, grads, skip=be.asarray(numpy.ones(1, numpy.int32)))
    for name, value in opt.get_state().items():
        numpy.testing.assert_array_equal(value, before[0][name])
    numpy.testing.assert_array_equal(be.to_numpy(params), before[1])


# -------------------------------------------------------------------- errors
@pytest.mark.parametrize("make,pattern", [
    (lambda: dnn.optimizers.SGD(clipnorm=1.0, clipvalue=0.5),
     r"SGD: expected at most one of clipnorm, clipvalue and global_clipnorm \(as Keras\); "
     r"got clipnorm=1.0, clipvalue=0.5, global_clipnorm=None"),
    (lambda: dnn.optimizers.Adam(gradient_accumulation_steps=1),
     r"Adam: gradient_accumulation_steps: expected an integer >= 2; got 1"),
    (lambda: dnn.optimizers.Lion(ema_momentum=1.5, use_ema=True),
     r"Lion: ema_momentum: expected a number in \[0, 1\]; got 1.5"),
    (lambda: dnn.optimizers.Adam(ema_overwrite_frequency=2.5, use_ema=True),
     r"Adam: ema_overwrite_frequency: expected a positive integer; got 2.5"),
    (lambda: dnn.optimizers.SGD(use_ema=True, formula="legacy"),
     r"SGD: formula 'legacy' \(files written before Keras 3 parity\) takes none of "
     r"global_clipnorm, use_ema, gradient_accumulation_steps, exclude_from_weight_decay; "
     r"got use_ema"),
    (lambda: dnn.optimizers.Nadam(formula="legacy"),
     r"Nadam: formula: expected 'keras3' \(no file written before Keras 3 parity holds a "
     r"Nadam\); got 'legacy'"),
    (lambda: dnn.optimizers.Adam(formula="pytorch"),
     r"Adam: formula: expected one of keras3, legacy; got 'pytorch'"),
    (lambda: dnn.optimizers.RMSprop(centered=True, formula="legacy"),
     r"RMSprop: centered: formula 'legacy' .* has no centered form"),
    (lambda: dnn.optimizers.Adagrad(initial_accumulator_value=-1),
     r"Adagrad: initial_accumulator_value: expected a finite number >= 0; got -1"),
    (lambda: dnn.optimizers.Lion(beta_1=0.0),
     r"Lion: beta_1: expected a number in \(0, 1\]; got 0.0"),
    (lambda: dnn.optimizers.AdamW().exclude_from_weight_decay(var_names=[""]),
     r"AdamW: exclude_from_weight_decay: var_names: expected non-empty strings; got ''"),
])
def test_bad_optimizer_arguments_are_named(make, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        make()


@pytest.mark.parametrize("make,pattern", [
    (lambda: schedules.PolynomialDecay(0.1, 0), r"PolynomialDecay: decay_steps: expected a "
                                                r"finite number > 0; got 0"),
    (lambda: schedules.InverseTimeDecay(0.1, 5, -1.0), r"InverseTimeDecay: decay_rate: "
                                                       r"expected a finite number >= 0"),
    (lambda: schedules.CosineDecayRestarts(0.1, 5, t_mul=0), r"CosineDecayRestarts: t_mul: "
                                                             r"expected a finite number > 0"),
    (lambda: schedules.CosineDecayRestarts(0.1, 5, alpha=2), r"CosineDecayRestarts: alpha: "
                                                             r"expected a number in \[0, 1\]"),
])
def test_bad_schedule_arguments_are_named(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()
