"""How tests/data/format2_*.npz were made: run once with dnn at c959bf0 (format 2, before
the restructuring of issue 17 and the Keras-parity formulas of issue 19), from outside
the checkout:

    python tests/data/make_format2_fixtures.py tests/data

Each model file comes with what that dnn computed from it (``*_expected.npz``): its
predictions on fixed inputs, and its weights after three more training steps on fixed
data, so that a later dnn shows it loads the file bitwise and resumes with the formulas
the model was trained with (leaky ReLU's slope, tanh GELU, RMSprop's and momentum SGD's
updates). Kept for the record; the tests only read the files it wrote.
"""
import os
import sys

import numpy

import dnn
from dnn.layers import (Activation, BatchNormalization, Dense, Dropout, LayerNormalization,
                        Normalization)


def data(seed, n=96, features=5, classes=3):
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=(n, features)) * 3 + 1
    y = rng.integers(0, classes, n)
    return x, y


def mixed_model():
    norm = Normalization(input_dim=5)
    model = dnn.Sequential([norm, Dense(16, "relu"), BatchNormalization(), Dropout(0.2),
                            Dense(16, "leaky_relu"), LayerNormalization(),
                            Dense(8, "gelu"), Activation("tanh"), Dense(3, "softmax")], seed=3)
    x, y = data(0)
    norm.adapt(x)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam",
                  metrics=["accuracy"])
    return model, x, y


def rmsprop_model():
    model = dnn.Sequential([Dense(12, "gelu"), Dense(12, "leaky_relu"), Dense(3, "softmax")],
                           input_dim=5, seed=4)
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=dnn.optimizers.RMSprop(1e-3, momentum=0.9))
    return model, *data(1)


def sgd_model():
    schedule = dnn.optimizers.schedules.ExponentialDecay(0.05, 4, 0.5)
    model = dnn.Sequential([Dense(12, "relu"), Dense(1, "sigmoid")], input_dim=5, seed=5,
                           dtype="float64")
    model.compile(loss="binary_crossentropy",
                  optimizer=dnn.optimizers.SGD(schedule, momentum=0.9, nesterov=True))
    x, y = data(2, classes=2)
    return model, x, y


def main(out):
    probe = numpy.random.default_rng(99).normal(size=(20, 5)) * 3 + 1
    for name, make in (("mixed", mixed_model), ("rmsprop", rmsprop_model), ("sgd", sgd_model)):
        with dnn.use_backend("numpy"):
            model, x, y = make()
            model.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
            path = os.path.join(out, f"format2_{name}.npz")
            model.save(path)
            predictions = model.predict(probe)
            resumed = dnn.load_model(path)
            resumed.fit(x[:48], y[:48], epochs=1, batch_size=16, verbose=0, shuffle=False)
            numpy.savez(os.path.join(out, f"format2_{name}_expected.npz"), probe=probe,
                        predictions=predictions, resume_x=x[:48], resume_y=y[:48],
                        **{f"resumed_{i}": w for i, w in enumerate(resumed.get_weights())})


if __name__ == "__main__":
    main(sys.argv[1])
