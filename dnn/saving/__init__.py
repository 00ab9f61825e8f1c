"""Saving: a model to its .npz file and back (``saving_lib``, the format in
``model_file``), and export for inference outside dnn (``onnx_export``)."""
from .model_file import ModelFileError
from .saving_lib import check_saveable, load_model, register_model, save_model

__all__ = ["ModelFileError", "check_saveable", "load_model", "register_model", "save_model"]
