"""Layers, by family as Keras keeps them: the base ``Layer`` (``base``), the core layers
Dense, Dropout and Activation (``core``), and the normalization layers (``normalization``).

``layer_from_config`` rebuilds any of them from a saved config (``registry``).
"""
from .base import ForwardContext, Layer
from .core import RELU_BIAS_INIT, RELU_FAMILY, Activation, Dense, Dropout
from .normalization import BatchNormalization, LayerNormalization, Normalization
from .registry import LAYER_CLASSES, layer_from_config, register

__all__ = ["Activation", "BatchNormalization", "Dense", "Dropout", "ForwardContext",
           "LAYER_CLASSES", "Layer", "LayerNormalization", "Normalization", "RELU_BIAS_INIT",
           "RELU_FAMILY", "layer_from_config", "register"]
