"""The base ``Layer``: what every layer declares, and how the model binds it.

A layer declares the shapes of its trainable weights (``param_shapes``) and of its
non-trainable ones (``state_shapes``: moving statistics); the model owns the flat
buffers and hands each layer views into them (``bind``). A layer's workspaces come from
the model's buffer cache, per batch size, so that a training step allocates nothing
after its first call with a given batch size. All array work goes through
``self.backend``.

``forward(x, context)`` returns the output and what the backward pass needs from this
call (each class's ``Retained`` tuple names it, as Chainer's ``retain_inputs`` and
``retain_outputs`` do); ``backward(dy, retained)`` takes it back. Nothing of a pass is
kept on the layer, so the layer holds its configuration and weights only.

Shapes: inputs and outputs are ``(batch, features)``.
"""
from __future__ import annotations

import collections
import inspect

from ..utils.validation import check_positive_int

# What one forward pass is told: whether it trains (Dropout drops and BatchNormalization
# uses the batch's statistics only then), the optimizer's step count on the device (it
# keys dropout masks), and where this batch's rows start within the step's global batch
# (a data-parallel rank draws its rows of the mask one rank would draw).
ForwardContext = collections.namedtuple("ForwardContext", "training iterations row_offset")
INFERENCE = ForwardContext(False, 0, 0)

# (trainable views, gradient views, non-trainable views) of one layer's weights.
LayerViews = collections.namedtuple("LayerViews", "params grads state")


class Layer:
    """Base class. Subclasses set ``param_shapes`` (and ``state_shapes``) in ``build``
    and implement ``forward``/``backward``. ``input_dim=n`` or ``input_shape=(n,)`` on
    the first layer of a model gives the model its input width (as Keras takes them).

    ``dtype`` is the weights' dtype and ``compute_dtype`` the activations' (as Keras
    names them); they differ only under a mixed policy."""

    # Names of the non-trainable weights that drift apart when replicas train on
    # different batches, so data-parallel training averages them across ranks.
    averaged_state = ()

    def __init__(self, name=None, input_dim=None, input_shape=None):
        self.name = name
        self.backend = None
        self.dtype = self.compute_dtype = None  # set by bind
        self.input_dim = input_width(input_dim, input_shape, type(self).__name__)
        self.declared_input_dim = self.input_dim  # as given: saved, and checked at build
        self.output_dim = None
        self.param_shapes = []  # [(name, shape)] trainable, in get_weights order
        self.state_shapes = []  # [(name, shape)] non-trainable, after the trainable ones
        self.params = []  # views into the model's flat parameter buffer (compute dtype)
        self.grads = []  # views into the model's flat gradient buffer
        self.state = []  # views into the model's flat state buffer
        self._buffers = None  # the model's BufferCache
        self._last_workspace = (None, None)  # (rows, workspace): the size asked last
        # Set by the model when the loss consumes logits (softmax/sigmoid fused into the
        # loss): the output layer then stops before its activation.
        self.emit_logits = False

    def build(self, input_dim):
        """Fix the input width; returns the output width."""
        self._set_input_dim(input_dim)
        self.output_dim = self.input_dim
        return self.output_dim

    def _set_input_dim(self, input_dim):
        declared = self.declared_input_dim
        if declared is not None and declared != int(input_dim):
            raise ValueError(f"{type(self).__name__}: input_dim: expected {declared} (as "
                             f"declared); got {int(input_dim)} from the layer before it")
        self.input_dim = int(input_dim)

    def initial_values(self, rng, dtype):
        """Host NumPy arrays for the trainable weights then the state, from ``rng``."""
        return []

    def bind(self, backend, views, dtypes, buffers):
        """Attach the layer to the model: its weight, gradient and state views
        (``LayerViews``), ``(dtype, compute_dtype)``, and the model's per-batch-size
        buffer cache."""
        self.backend = backend
        self.dtype, self.compute_dtype = dtypes
        self.params, self.grads, self.state = (list(v) for v in views)
        self._buffers = buffers
        self._last_workspace = (None, None)

    def regularized(self):
        """``[(param index, Regularizer)]`` of the weights whose penalty joins the loss."""
        return []

    def count_params(self, trainable=None):
        """The number of weights: all of them, or only the trainable (True) or the
        non-trainable (False) ones."""
        shapes = {None: self.param_shapes + self.state_shapes, True: self.param_shapes,
                  False: self.state_shapes}[trainable]
        total = 0
        for _, shape in shapes:
            size = 1
            for s in shape:
                size *= s
            total += size
        return total

    def _workspace(self, n):
        """This layer's workspaces for a batch of ``n`` rows (``_make_workspace``). The
        size asked last is answered without the cache: a tiny model's step asks about
        ten times, and the lookups were 5% of it."""
        rows, workspace = self._last_workspace
        if rows != n:
            workspace = self._buffers.get(n, self, self._make_workspace)
            self._last_workspace = (n, workspace)
        return workspace

    def _make_workspace(self, n):
        return None

    def forward(self, x, context=INFERENCE):
        """``(output, retained)`` for a batch: the output, and what ``backward`` needs
        from this call. ``context``: a ``ForwardContext``."""
        raise NotImplementedError

    def backward(self, dy, retained, need_dx=True):
        """Given dL/d(output) and what ``forward`` retained, fill this layer's gradient
        views and return dL/d(input) (or None when ``need_dx`` is False). May
        overwrite ``dy``."""
        raise NotImplementedError

    def get_config(self):
        config = {"class_name": type(self).__name__, "name": self.name}
        if self.declared_input_dim is not None:
            config["input_dim"] = self.declared_input_dim
        return config

    @classmethod
    def from_config(cls, config):
        """A new layer from ``get_config()``'s dict, less its ``class_name``."""
        return cls(**config)

    def describe(self):
        return type(self).__name__

    def __repr__(self):
        """The class and the options that differ from the constructor's defaults (as
        scikit-learn shows an estimator)."""
        defaults = {name: p.default for name, p in
                    inspect.signature(type(self).__init__).parameters.items()}
        config = {k: v for k, v in self.get_config().items()
                  if k != "class_name" and v is not None and
                  not (k in defaults and _same(defaults[k], v))}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in config.items())})"


def _same(default, value):
    return type(default) is type(value) and default == value


def name_suffix(layer):
    """``, name='...'`` for a repr, or nothing."""
    return "" if layer.name is None else f", name={layer.name!r}"


def input_width(input_dim, input_shape, owner):
    """The input width declared by ``input_dim=n`` or Keras's ``input_shape=(n,)`` (one
    of them, or both agreeing), or None."""
    width = None if input_dim is None else check_positive_int(input_dim, f"{owner}: input_dim")
    if input_shape is None:
        return width
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if shape is None or len(shape) != 1:
        raise ValueError(f"{owner}: input_shape: expected a tuple of one positive integer, "
                         f"(features,) (dnn models take 2-D (samples, features) data); got "
                         f"{input_shape!r}")
    from_shape = check_positive_int(shape[0], f"{owner}: input_shape[0]")
    if width is not None and width != from_shape:
        raise ValueError(f"{owner}: input_shape: expected ({width},) to agree with "
                         f"input_dim={width}; got {input_shape!r}")
    return from_shape
