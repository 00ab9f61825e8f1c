"""Layers by class name, for rebuilding a model from its saved config: each layer class
registers itself (``@register``), so a new family of layers needs no edit here."""
from __future__ import annotations

LAYER_CLASSES = {}


def register(cls):
    """Class decorator: make ``cls`` known to ``layer_from_config`` by its name."""
    LAYER_CLASSES[cls.__name__] = cls
    return cls


def layer_from_config(config):
    """A new layer from ``get_config()``'s dict."""
    config = dict(config)
    cls_name = config.pop("class_name", None)
    cls = LAYER_CLASSES.get(cls_name)
    if cls is None:
        raise ValueError(f"layer config: class_name: expected one of "
                         f"{', '.join(LAYER_CLASSES)}; got {cls_name!r}")
    return cls.from_config(config)
