"""Layers, by family as Keras keeps them: ``base`` (Layer), ``core`` (Dense, Dropout,
Activation, LeakyReLU), ``normalization``, and ``residual`` (blocks with a skip path).

``layer_from_config`` rebuilds any of them from a saved config (``registry``).
"""
from .base import ForwardContext, Layer
from .core import RELU_BIAS_INIT, RELU_FAMILY, Activation, Dense, Dropout, LeakyReLU
from .normalization import BatchNormalization, LayerNormalization, Normalization
from .registry import LAYER_CLASSES, layer_from_config, register
from .residual import Residual

__all__ = ["Activation", "BatchNormalization", "Dense", "Dropout", "ForwardContext",
           "LAYER_CLASSES", "Layer", "LayerNormalization", "LeakyReLU", "Normalization",
           "RELU_BIAS_INIT", "RELU_FAMILY", "Residual", "layer_from_config", "register"]
