"""dnn's optimizers against real Keras 3, in float64, from the same initial weights: the
same model, data, batches and rate changes trained by both; prints the largest absolute
difference of the weights for each case, and the legacy formula's where it differs.

Needs Keras 3 with the JAX backend next to dnn (not a test dependency):

    pip install keras jax && KERAS_BACKEND=jax python -m dnn.bench.keras_optimizer_parity

(KERAS_BACKEND=numpy cannot train; torch's backend replaces each update by its own
fused torch code, so JAX's, which runs Keras' update_step as written, is the reference.)

Keras 3.15's ``ops.cos`` computes float64 input in float32 on JAX
(``dtypes.result_type(float64, float)`` is float32), so the cosine schedules' rates carry
float32 rounding there (about 1e-9); ``--float64-cos`` gives Keras JAX's own float64
cosine, to see the rest of the difference.
"""
import os
import sys

import numpy

os.environ.setdefault("KERAS_BACKEND", "jax")


def _keras():
    import jax

    jax.config.update("jax_enable_x64", True)
    import keras

    keras.config.set_floatx("float64")
    return keras


def _data():
    rng = numpy.random.default_rng(0)
    return rng.normal(size=(48, 5)), rng.normal(size=(48, 2)) * 2


RATES = [0.03, 0.01, 0.003, 0.001]  # set at each epoch, as ReduceLROnPlateau would


def cases(keras):
    """``(name, make dnn optimizer, make keras optimizer, rates set by hand?)``."""
    import dnn
    from dnn.optimizers import schedules as s

    ko, ks = keras.optimizers, keras.optimizers.schedules

    def both(name, kw, keras_kw=None, rates=False, schedule=None):
        keras_kw = kw if keras_kw is None else keras_kw
        d_lr = schedule[0] if schedule else 0.03
        k_lr = schedule[1] if schedule else 0.03
        dnn_cls = dnn.optimizers.OPTIMIZERS[name.lower()]
        return (f"{name}({', '.join(f'{k}={v}' for k, v in kw.items())})"
                + (f" + {type(d_lr).__name__}" if schedule else "")
                + (" + rate set each epoch" if rates else ""),
                lambda legacy=False: dnn_cls(learning_rate=d_lr, **kw,
                                             **({"formula": "legacy"} if legacy else {})),
                lambda: getattr(ko, name)(learning_rate=k_lr, **keras_kw), rates)

    exp = (s.ExponentialDecay(0.03, 4, 0.5), ks.ExponentialDecay(0.03, 4, 0.5))
    return [
        both("RMSprop", {}), both("RMSprop", {"momentum": 0.9}),
        both("RMSprop", {"centered": True}),
        both("SGD", {"momentum": 0.9}, schedule=exp),
        both("SGD", {"momentum": 0.9, "nesterov": True}, rates=True),
        both("SGD", {"clipnorm": 0.1}), both("SGD", {"global_clipnorm": 0.1}),
        both("SGD", {"momentum": 0.9, "weight_decay": 0.05}),
        both("RMSprop", {"weight_decay": 0.05}), both("Adam", {"weight_decay": 0.05}),
        both("AdamW", {"weight_decay": 0.05}),
        both("Adam", {"amsgrad": True}), both("Nadam", {}), both("Adagrad", {}),
        both("Adamax", {}), both("Lion", {}),
        both("Adam", {"use_ema": True, "ema_overwrite_frequency": 3}),
        both("SGD", {"momentum": 0.9, "gradient_accumulation_steps": 2}, schedule=exp),
        both("Adam", {}, schedule=(s.PolynomialDecay(0.03, 10, 0.001, power=2.0, cycle=True),
                                   ks.PolynomialDecay(0.03, 10, 0.001, power=2.0, cycle=True))),
        both("Adam", {}, schedule=(s.InverseTimeDecay(0.03, 3, 0.5, staircase=True),
                                   ks.InverseTimeDecay(0.03, 3, 0.5, staircase=True))),
        both("SGD", {"momentum": 0.9}, schedule=(s.CosineDecay(0.03, 20, alpha=0.1),
                                                 ks.CosineDecay(0.03, 20, alpha=0.1))),
        both("SGD", {"momentum": 0.9},
             schedule=(s.CosineDecayRestarts(0.03, 5, t_mul=1.5, m_mul=0.8, alpha=0.1),
                       ks.CosineDecayRestarts(0.03, 5, t_mul=1.5, m_mul=0.8, alpha=0.1))),
    ]


def train_keras(keras, make, weights, rates):
    x, y = _data()
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2)])
    model.set_weights(weights)
    optimizer = make()
    if "AdamW" in type(optimizer).__name__:
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    model.compile(optimizer=optimizer, loss="mse")
    callbacks = [keras.callbacks.LearningRateScheduler(lambda e, lr: RATES[e])] if rates else []
    model.fit(x, y, epochs=len(RATES), batch_size=8, shuffle=False, verbose=0,
              callbacks=callbacks)
    return model.get_weights()


def train_dnn(make, rates, legacy):
    import dnn
    from dnn.layers import Dense

    x, y = _data()
    model = dnn.Sequential([Dense(8, "relu"), Dense(2)], input_dim=5, seed=3, dtype="float64")
    start = model.get_weights()
    optimizer = make(legacy)
    if isinstance(optimizer, dnn.optimizers.AdamW) and not legacy:
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    model.compile(loss="mse", optimizer=optimizer)
    callbacks = [dnn.callbacks.LearningRateScheduler(lambda e, lr: RATES[e])] if rates else []
    model.fit(x, y, epochs=len(RATES), batch_size=8, shuffle=False, verbose=0,
              callbacks=callbacks)
    return start, model.get_weights()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    keras = _keras()
    if "--float64-cos" in argv:
        import jax.numpy as jnp
        import keras.src.backend as keras_backend

        keras_backend.numpy.cos = lambda x: jnp.cos(jnp.asarray(x))
    print(f"Keras {keras.__version__} ({keras.backend.backend()}), float64; model "
          f"Dense(8, relu) -> Dense(2), mse, 48 rows, batches of 8, {len(RATES)} epochs "
          f"(24 updates)")
    print(f"{'case':64s} {'max |dnn - keras|':>18s} {'legacy formula':>15s}")
    for name, make_dnn, make_keras, rates in cases(keras):
        start, new = train_dnn(make_dnn, rates, legacy=False)
        want = train_keras(keras, make_keras, start, rates)
        diff = max(float(numpy.abs(a - b).max()) for a, b in zip(new, want))
        try:
            _, old = train_dnn(make_dnn, rates, legacy=True)
            old_diff = f"{max(float(numpy.abs(a - b).max()) for a, b in zip(old, want)):15.2e}"
        except ValueError:  # an option or optimizer the legacy formula never had
            old_diff = f"{'-':>15s}"
        print(f"{name:64s} {diff:18.2e} {old_diff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
