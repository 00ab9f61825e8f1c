"""dnn: train multi-layer perceptrons on NumPy (CPU) or CuPy (NVIDIA GPU).

    import dnn
    model = dnn.Sequential([dnn.layers.Dense(4, "relu"), dnn.layers.Dense(1, "sigmoid")],
                           input_dim=2, seed=0)
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x, y, epochs=50, batch_size=32)
"""
from . import callbacks, data, layers, losses, metrics, optimizers, plot
from .backend_scope import get_backend, set_backend, use_backend
from .model import NonFiniteLossError, Sequential
from .saving import ModelFileError, load_model

__version__ = "0.1.0"

__all__ = [
    "ModelFileError", "NonFiniteLossError", "Sequential", "callbacks", "data", "get_backend",
    "layers", "load_model", "losses", "metrics", "optimizers", "plot", "set_backend", "use_backend",
    "__version__",
]
