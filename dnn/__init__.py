"""dnn: train multi-layer perceptrons on NumPy (CPU) or CuPy (NVIDIA GPU).

    import dnn
    model = dnn.Sequential([dnn.layers.Dense(4, "relu"), dnn.layers.Dense(1, "sigmoid")],
                           input_dim=2, seed=0)
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x, y, epochs=50, batch_size=32)
"""
import importlib.util as _importlib_util

if _importlib_util.find_spec(__name__ + ".backends") is None:
    # Only an install maps the repository's backends/ and kernels/ into the package.
    raise ImportError(f"imported {__path__[0]}, the source folder of a dnn checkout, which "
                      f"shadows any installed dnn: run Python from another directory, or use "
                      f"the dnn command (and pip install . in the checkout if dnn is not "
                      f"installed yet)")

from . import (activations, backends, callbacks, data, distributed,  # noqa: E402
               initializers, layers, losses, metrics, optimizers, plot, regularizers)
from .backend_scope import get_backend, set_backend, use_backend  # noqa: E402
from .model import NonFiniteLossError, Sequential  # noqa: E402
from .saving import ModelFileError, load_model, save_model  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = [
    "ModelFileError", "NonFiniteLossError", "Sequential", "activations", "backends",
    "callbacks", "data", "distributed", "get_backend", "initializers", "layers", "load_model",
    "losses", "metrics", "optimizers", "plot", "regularizers", "save_model", "set_backend",
    "use_backend",
    "__version__",
]
