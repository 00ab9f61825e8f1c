"""What a precision mode does to accuracy: the same network trained on a real task at
each precision, reported beside the throughput figures."""
from __future__ import annotations

import numpy


def task():
    """scikit-learn's digits when installed, else a generated 3-arm spiral task."""
    import dnn

    try:
        x, y = dnn.data.load_digits()
        name = "digits"
    except ImportError:
        x, y = dnn.data.make_spirals(1500, 3, noise=0.2, seed=0)
        name = "spirals"
    x_tr, x_te, y_tr, y_te = dnn.data.train_test_split(x, y, test_size=0.2, seed=0,
                                                       stratify=True)
    scaler = dnn.data.Standardizer().fit(x_tr)
    return name, scaler.transform(x_tr), scaler.transform(x_te), y_tr, y_te


def accuracy_at(backend, dtype, epochs=30, seed=0):
    """Test accuracy and final training loss of a 128-128 ReLU MLP with Adam."""
    import dnn
    from dnn.layers import Dense

    name, x_tr, x_te, y_tr, y_te = task()
    with dnn.use_backend(backend):
        model = dnn.Sequential([Dense(128, "relu"), Dense(128, "relu"),
                                Dense(int(numpy.max(y_tr)) + 1, "softmax")],
                               input_dim=x_tr.shape[1], seed=seed, dtype=dtype)
        model.compile(loss="sparse_categorical_crossentropy", optimizer="adam",
                      metrics=["accuracy"])
        history = model.fit(x_tr, y_tr, epochs=epochs, batch_size=64, verbose=0)
        result = model.evaluate(x_te, y_te, return_dict=True)
    return {"task": name, "test_accuracy": result["accuracy"], "test_loss": result["loss"],
            "final_train_loss": history.history["loss"][-1], "epochs": epochs}
