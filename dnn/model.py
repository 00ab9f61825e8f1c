"""``Sequential``: a stack of layers, its weights, and what is done with them.

A model whose input width is known (``Sequential(..., input_dim=n)``, or a first layer
given ``input_dim=n``) is built when it is made, on the backend current then, as Keras
builds it: its weights exist before any ``fit``. Weights live in flat device buffers
(``dnn.training.parameters``); the math of a step is ``dnn.training.passes``; the
training loop is ``dnn.training.trainer.Trainer``; saving is ``dnn.saving``.
"""
from __future__ import annotations

import numpy

from . import backend_scope, losses as losses_mod, metrics as metrics_mod
from . import optimizers as optimizers_mod
from .layers import Activation, Dense, Dropout, Layer, Residual
from .layers.base import ForwardContext, input_width
from .saving import check_saveable, register_model, save_model
from .training import data_adapter, passes
from .training.buffer_cache import BufferCache
from .training.nan_guard import NonFiniteLossError
from .training.options import FitOptions
from .training.parameters import Parameters
from .training.replica import LOCAL, Strategy
from .training.sources import ArraySource
from .training.trainer import Trainer
from .utils.progress import format_logs
from .utils.summary import summary_text
from .utils.validation import check_dtype, check_nonnegative_int, check_positive_int

__all__ = ["NonFiniteLossError", "Sequential"]


@register_model
class Sequential:
    """``Sequential(layers, input_dim=None, seed=None, dtype="float32")``.

    The input width is ``input_dim=n`` or ``input_shape=(n,)`` (here or on the first
    layer). ``dtype`` is the weights' dtype (and so the gradients' and the optimizer
    state's), ``compute_dtype`` the activations'; they differ only under the policy
    ``"mixed_bfloat16"``, as in Keras."""

    def __init__(self, layers=None, input_dim=None, seed=None, dtype="float32",
                 name="sequential", input_shape=None):
        self.name = name
        self.layers: list[Layer] = []
        self.built = False
        self.input_dim = input_width(input_dim, input_shape, "Sequential")
        self.output_dim = None
        if seed is None:
            seed = int(numpy.random.SeedSequence().entropy % (2**63))
        self.seed = check_nonnegative_int(seed, "seed")
        self.dtype, self.compute_dtype = check_dtype(dtype)
        self.dtype_policy = dtype if self.mixed else self.dtype.name
        self.backend = None
        self.loss = None
        self.optimizer = None
        self.metrics = []
        self.steps_per_execution = 1
        self.stop_training = False
        self.history = None
        self.epochs_done = 0  # epochs completed over all fit calls (for resume)
        # Optimizer steps taken, counted on the host (the device has its own count in
        # optimizer.iterations, which keys the dropout masks), saved for resume.
        self.train_steps = 0
        # JSON-serialisable extras saved with the model (the CLI keeps the data's feature
        # and target names here).
        self.metadata = {}
        self._class_names = None
        self.weights = None  # Parameters: the flat weight, gradient and state buffers
        self.buffers = None  # BufferCache: everything whose shape follows the batch size
        self._logits = False  # whether the output layer hands logits to the loss
        self._trainer = None  # Trainer, once both built and compiled
        self.distribute = None  # the Strategy given to compile, or None
        self.replica = LOCAL  # this model's part in training across ranks
        for layer in layers or []:  # all of them, then one build (not one per layer)
            self._append(layer)
        if self.input_dim is not None and self.layers:
            self.build()

    @property
    def class_names(self):
        """The name of each class, in the order of the output's class indices (for a
        single sigmoid unit: the class of output 0, then of output 1), or None. Saved with
        the model; ``dnn train`` sets it from text labels and ``dnn predict`` writes it."""
        return self._class_names

    @class_names.setter
    def class_names(self, names):
        if names is not None:
            names = list(names)
            if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
                raise ValueError(f"class_names: expected distinct strings; got {names!r}")
            classes = None if not self.built else \
                (2 if self.output_dim == 1 else self.output_dim)
            if classes is not None and len(names) != classes:
                raise ValueError(f"class_names: expected {classes} names (the output has "
                                 f"{self.output_dim} unit{'s' * (self.output_dim > 1)}); got "
                                 f"{len(names)}")
        self._class_names = names

    @property
    def mixed(self):
        """Whether activations are computed in a lower precision than the weights."""
        return self.compute_dtype != self.dtype

    @property
    def flat_params(self):
        return self.weights.params

    @property
    def flat_grads(self):
        return self.weights.grads

    # ------------------------------------------------------------------ structure
    def add(self, layer):
        """Append a layer. A built model is built again with it, keeping the weights of
        the layers it had (and, when compiled, starting the optimizer state afresh)."""
        self._append(layer)
        if self.built:
            kept = self.get_weights()
            self.built = False
            self.build()
            self.weights.set(kept + self.get_weights()[len(kept):])
        elif self.input_dim is not None and len(self.layers) == 1 and \
                layer.declared_input_dim is not None:
            self.build()
        return self

    def _append(self, layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: layer: expected a dnn.layers.Layer; "
                            f"got {type(layer).__name__}")
        if not self.layers and layer.declared_input_dim is not None:
            if self.input_dim is not None and self.input_dim != layer.declared_input_dim:
                raise ValueError(f"input_dim: expected {self.input_dim} (the model's); got "
                                 f"{layer.declared_input_dim} from {layer!r}")
            self.input_dim = layer.declared_input_dim
        self.layers.append(layer)

    def build(self, input_dim=None):
        """Create the weights on the current backend (done at construction when the
        input width is known, else by the first fit)."""
        if input_dim is not None:
            input_dim = check_positive_int(input_dim, "input_dim")
            if self.input_dim is not None and input_dim != self.input_dim:
                raise ValueError(f"input_dim: expected {self.input_dim} (set at construction); "
                                 f"got {input_dim}")
            self.input_dim = input_dim
        if self.built:
            return self
        if self.input_dim is None:
            raise ValueError("input_dim: expected the number of input features (pass "
                             "input_dim= to Sequential or to the first layer, or call fit); "
                             "got None")
        if not self.layers:
            raise ValueError("layers: expected at least one layer; got an empty model")
        self.backend = self.backend or backend_scope.get_backend()
        dim = self.input_dim
        for layer in self.layers:
            dim = layer.build(dim)
        self.output_dim = dim
        self.buffers = BufferCache()
        self.weights = Parameters(self.backend, self.layers, self.seed, self.dtype,
                                  self.compute_dtype, self.buffers)
        self.seed_dropout()
        self.built = True
        if self.loss is not None:
            self._configure_compiled()
        return self

    def seed_dropout(self):
        """Give each Dropout layer its seed, from the model's seed and its position (in
        a residual block: the block's position, then its own)."""
        for index, layer in enumerate(self.layers):
            _seed_dropout(layer, [self.seed, index])

    # -------------------------------------------------------------------- compile
    def compile(self, loss, optimizer="rmsprop", metrics=None, steps_per_execution=1,
                distribute=None, weighted_metrics=None):
        """Choose the loss, optimizer and metrics, by name or object (Keras' names and
        aliases: "bce", "mse", "AUC", "acc"...; a metric given by name is logged under
        that name, as Keras does).

        ``metrics`` are computed unweighted and ``weighted_metrics`` with each sample's
        weight (``sample_weight`` and ``class_weight``), as in Keras; a metric in both
        lists logs its weighted value as "weighted_<name>".
        ``steps_per_execution``: training steps per captured-graph launch (as Keras):
        with K > 1 and a captured step (a GPU, or ``fit(cuda_graph=True)``), K steps
        replay as one graph that gathers its own batches on the device.
        ``distribute``: a ``dnn.distributed.DataParallel`` strategy, to train on every
        rank an MPI launcher started (see ``dnn.distributed``)."""
        _check_strategy(distribute, "compile: distribute", allow_none=True)
        self.distribute = distribute
        self.steps_per_execution = check_positive_int(steps_per_execution,
                                                      "steps_per_execution")
        self.loss = losses_mod.get(loss)
        self.optimizer = optimizers_mod.get(optimizer)
        self.metrics = metrics_mod.compiled(metrics, weighted_metrics)
        if self.built:
            self._configure_compiled()
        return self

    def _configure_compiled(self):
        """Tell the output layer whether the loss consumes logits, bind the metrics,
        and give the optimizer its state."""
        activation = self._output_activation()
        self._logits = self.loss.uses_logits(activation)
        for layer in self.layers:
            layer.emit_logits = False
        self.layers[-1].emit_logits = self._logits
        for metric in self.metrics:
            metric.bind(self.loss, activation, self._logits, self.output_dim)
            metric.buffers = self.buffers  # workspaces shaped by the batch size
        self.optimizer.build(self.backend, self.flat_params.shape[0], self.dtype,
                             self.weights.segments)
        self._bind_strategy()

    def _bind_strategy(self):
        """Attach ``self.distribute`` (if any) and start a Trainer for this setup: a new
        Trainer drops the captured steps and the NaN guard's snapshot, which point at
        the old optimizer's state."""
        self.replica = LOCAL if self.distribute is None else self.distribute.attach(self)
        if self._trainer is not None:
            self._trainer.captured.clear()
        self._trainer = Trainer(self)

    def distribute_with(self, strategy):
        """Train a compiled model data-parallel from now on, keeping its optimizer state
        (``load_model(path, distribute=)`` does this to resume)."""
        self._require_compiled("distribute_with")
        _check_strategy(strategy, "distribute_with: strategy")
        self.distribute = strategy
        if self.built:
            self._bind_strategy()
        return self

    def _output_activation(self):
        last = self.layers[-1]
        return last.activation if isinstance(last, (Dense, Activation, Residual)) else "linear"

    def _require_compiled(self, what):
        if self.loss is None:
            raise RuntimeError(f"{what}: the model is not compiled; call "
                               f"model.compile(loss=..., optimizer=...) first")

    def warmup(self):
        """Compile now what a training step runs (its kernels, the optimizer's fused
        update, library handles), so that no first step pays for it: one forward and
        backward pass of two zero rows, which leaves the weights alone."""
        self._require_built("warmup")
        be = self.backend
        be.warmup()
        if self.optimizer is not None:
            self.optimizer.warmup()
            y_shape = (2,) if self.loss.integer_targets else (2, self.output_dim)
            batch = (be.zeros((2, self.input_dim), self.compute_dtype),
                     be.zeros(y_shape, self.loss.target_dtype(self.dtype)))
            # A training-mode pass moves BatchNormalization's moving statistics: keep them.
            state = be.copy(self.weights.state)
            passes.loss_and_backward(self, batch, ForwardContext(True, self.optimizer.iterations,
                                                                 0))
            be.copy(state, out=self.weights.state)

    # ---------------------------------------------------------- fit/evaluate/predict
    def fit(self, x, y=None, epochs=1, batch_size=None, validation_split=0.0,
            validation_data=None, shuffle=True, verbose=1, callbacks=None, initial_epoch=0,
            terminate_on_nan=True, cuda_graph="auto", sample_weight=None, class_weight=None,
            validation_batch_size=None, steps_per_epoch=None, validation_steps=None,
            shard=False):
        """Train for ``epochs - initial_epoch`` epochs. Returns a History whose
        ``.history`` maps "loss", each metric and their "val_" forms to per-epoch lists.

        ``x`` and ``y``: arrays (NumPy, the backend's own, DLPack exporters such as torch
        tensors; a memmap or ``dnn.training.Rows`` is streamed from the host, as is an
        array larger than the device's memory), or ``x`` alone a batch source: a
        Keras-style sequence (``__len__``, ``__getitem__``; Keras 3's ``PyDataset``), a
        generator or an iterable (a torch ``DataLoader``) of ``(x, y)`` or ``(x, y,
        sample_weight)`` batches (see ``dnn.training.data_adapter``). ``batch_size``
        (arrays only; default 32): rows per step, per rank in data-parallel training.
        ``steps_per_epoch`` (batch sources): batches per epoch, drawn from a stream that
        goes on across epochs (needed for a generator that never ends);
        ``validation_steps``: batches per validation. ``shuffle`` permutes the rows of
        arrays and the batches of a sequence (an iterable keeps its own order).

        ``sample_weight`` (one weight per sample) or ``class_weight`` ({class: weight})
        weight each sample's loss, as in Keras: the batch loss is the weighted sum over
        the batch size. ``validation_data``: ``(x, y)``, ``(x, y, sample_weight)`` or a
        batch source. ``validation_batch_size``: the batch of the validation pass
        (default: ``batch_size``). ``cuda_graph``: "auto" captures the training step as
        a CUDA graph and replays it where the backend supports graphs (CuPy) and nothing
        in the step needs the host (the legacy formula's clipnorm, of models saved
        before Keras 3's, does; MPI's collectives on GPU arrays do); True forces the
        captured-step code path (on NumPy a replay runs what was captured, and checks
        that the step still runs exactly that); False runs every step eagerly. ``shard`` (data-parallel): each rank
        passes its own part of the data (checked: the same number of steps), instead
        of every rank the same data (checked: the same rows and fingerprint).
        """
        self._require_compiled("fit")
        options = FitOptions(
            epochs=epochs, batch_size=batch_size, validation_split=validation_split,
            validation_data=validation_data, validation_batch_size=validation_batch_size,
            shuffle=shuffle, verbose=verbose, callbacks=callbacks, initial_epoch=initial_epoch,
            terminate_on_nan=terminate_on_nan, cuda_graph=cuda_graph,
            steps_per_epoch=steps_per_epoch, validation_steps=validation_steps, shard=shard)
        train, validation = data_adapter.training_sources(
            self, x, y, options, sample_weight=sample_weight, class_weight=class_weight)
        return self._trainer.fit(train, options, validation)

    def evaluate(self, x, y=None, batch_size=None, verbose=0, sample_weight=None, steps=None,
                 return_dict=False):
        """Mean loss and metrics over (x, y), or over a batch source's batches (as
        ``fit`` takes them; at most ``steps`` batches), as Keras 3 returns them: the loss
        alone when the model has no metrics, else ``[loss, metric, ...]`` in compile
        order; ``return_dict=True`` gives ``{"loss": ..., "accuracy": ...}``.
        ``batch_size``: arrays only, default 256. Data-parallel, the ranks share the
        rows: call it on every rank."""
        self._require_compiled("evaluate")
        batch_size = _optional_positive(batch_size, "batch_size")
        steps = _optional_positive(steps, "steps")
        source, batch_size = data_adapter.evaluation_source(self, x, y, batch_size,
                                                            sample_weight, steps)
        logs = self._trainer.evaluate(source, batch_size, steps)
        if verbose:
            print(format_logs(logs))
        return _as_keras_returns(logs, return_dict)

    def train_on_batch(self, x, y, sample_weight=None, class_weight=None, return_dict=False):
        """One training step on all of (x, y), as Keras' ``train_on_batch``: the step
        ``fit`` runs (captured and replayed where the backend captures), without the NaN
        guard; returns that batch's loss and metrics as ``evaluate`` does."""
        self._require_compiled("train_on_batch")
        self._refuse_data_parallel("train_on_batch")
        source = ArraySource(*data_adapter.features_and_targets(
            self, x, y, sample_weight=sample_weight,
            class_weight=class_weight))
        return _as_keras_returns(self._trainer.train_batch(source), return_dict)

    def test_on_batch(self, x, y, sample_weight=None, return_dict=False):
        """The loss and metrics of (x, y) as one batch, in inference mode (Keras'
        ``test_on_batch``); returned as ``evaluate`` does."""
        self._require_compiled("test_on_batch")
        self._refuse_data_parallel("test_on_batch")
        source = ArraySource(*data_adapter.features_and_targets(
            self, x, y, sample_weight=sample_weight))
        return _as_keras_returns(self._trainer.evaluate(source, max(1, source.rows)),
                                 return_dict)

    def predict_on_batch(self, x):
        """``predict(x)`` as one batch (Keras' ``predict_on_batch``)."""
        return self.predict(x, batch_size=max(1, len(x)))

    def _refuse_data_parallel(self, what):
        if self.distribute is not None:
            raise ValueError(f"{what}: expected a model that trains on one process; this one "
                             f"was compiled with distribute= (use fit or evaluate, which "
                             f"share the rows across ranks)")

    def predict(self, x, batch_size=None, verbose=0, steps=None):
        """Outputs as a NumPy array of shape (n, output_dim), with the output
        activation applied (probabilities for sigmoid/softmax outputs). ``x``: arrays,
        or a batch source (its batches' targets, if any, are not used); at most
        ``steps`` batches. ``batch_size``: arrays only, default 256."""
        batch_size = _optional_positive(batch_size, "batch_size")
        steps = _optional_positive(steps, "steps")
        source, batch_size = data_adapter.prediction_source(self, x, batch_size, steps)
        if source is not None:
            return self._predict_batches(source, batch_size, steps)
        x_dev = data_adapter.features(self, x)
        rows = x_dev.shape[0] if steps is None else min(x_dev.shape[0], steps * batch_size)
        result = numpy.empty((rows, self.output_dim), dtype=self.dtype)
        for start in range(0, rows, batch_size):
            out = passes.output(self, x_dev[start:min(start + batch_size, rows)])
            if self._logits:
                out = self.backend.activation(self._output_activation(), out)
            result[start:start + out.shape[0]] = self.backend.to_numpy(out)
        return result

    def _predict_batches(self, source, batch_size, steps):
        outputs = []
        with source.evaluation(self, batch_size, steps, split=False) as batches:
            for batch in batches:
                out = passes.output(self, batch[0])
                if self._logits:
                    out = self.backend.activation(self._output_activation(), out)
                outputs.append(numpy.array(self.backend.to_numpy(out), dtype=self.dtype))
        if not outputs:
            raise ValueError("predict: x gave no batches (an exhausted generator?)")
        return numpy.concatenate(outputs)

    def __call__(self, x):
        """``model(x)``: ``predict(x)`` as one batch."""
        return self.predict_on_batch(x)

    # ------------------------------------------------------------------- weights
    def _require_built(self, what):
        if not self.built:
            raise RuntimeError(f"{what}: the model has no weights yet; give the model its "
                               f"input width (input_dim=) or call fit first")

    def get_weights(self):
        """NumPy copies ``[W0 (in, out), b0, W1, b1, ...]``: each layer's trainable
        weights, then its non-trainable ones (moving statistics)."""
        self._require_built("get_weights")
        return self.weights.get()

    def set_weights(self, weights):
        self._require_built("set_weights")
        self.weights.set(weights)

    def count_params(self, trainable=None):
        """Every weight, trainable or not, as Keras counts (``trainable=True`` or
        ``False``: only those)."""
        return sum(layer.count_params(trainable) for layer in self.layers)

    def loss_and_gradients(self, x, y, training=False, sample_weight=None):
        """``(loss, [dW0, db0, ...])`` on the whole of (x, y): the loss includes weight
        penalties, the gradients are those of the trainable weights in get_weights
        order. ``training=True`` applies dropout with the mask of the current step and
        batch statistics in BatchNormalization."""
        self._require_compiled("loss_and_gradients")
        batch = data_adapter.features_and_targets(self, x, y, sample_weight=sample_weight)
        batch = batch if batch[2] is not None else batch[:2]
        context = ForwardContext(bool(training), self.optimizer.iterations, 0)
        _, loss = passes.loss_and_backward(self, batch, context)
        be = self.backend
        return be.to_float(loss.reshape(())), [be.to_numpy(g).copy()
                                               for layer in self.layers for g in layer.grads]

    # ---------------------------------------------------------------- save/show
    def get_config(self):
        return {"class_name": type(self).__name__, "name": self.name,
                "input_dim": self.input_dim, "seed": self.seed, "dtype": self.dtype_policy,
                "class_names": self.class_names,
                "layers": [layer.get_config() for layer in self.layers]}

    def save(self, path):
        """Write weights, config and optimizer state to ``path`` (.npz, or a binary file
        object), atomically: see ``dnn.saving.save_model``."""
        self._require_built("save")
        save_model(self, path)

    def check_saveable(self, path, what="save"):
        """Raise now what ``save(path)`` would raise later for this model (a .keras
        archive: h5py, and layers Keras can hold): ``dnn.saving.check_saveable``."""
        check_saveable(self, path, what)

    def export(self, path, format="onnx"):
        """Write the model for inference outside dnn: ``format="onnx"`` (needs the
        ``onnx`` extra) gives one graph from raw features to the output layer's
        activation, with a dynamic batch dimension (see ``dnn.saving.onnx_export``)."""
        self._require_built("export")
        if format != "onnx":
            raise ValueError(f"export: format: expected 'onnx'; got {format!r}")
        from .saving.onnx_export import export as export_onnx  # the onnx extra, on use

        export_onnx(self, path)

    def summary(self, print_fn=print):
        """Print layers, output shapes and parameter counts, and the backend, device
        and dtype."""
        print_fn(summary_text(self))

    def __repr__(self):
        return (f"Sequential([{', '.join(repr(layer) for layer in self.layers)}], "
                f"input_dim={self.input_dim}, seed={self.seed}, dtype={self.dtype_policy!r})")


def _optional_positive(value, name):
    return None if value is None else check_positive_int(value, name)


def _as_keras_returns(logs, return_dict):
    """What Keras 3's evaluate and ``*_on_batch`` return: the logs dict with
    ``return_dict``, else the loss alone or ``[loss, metric, ...]``."""
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values


def _seed_dropout(layer, path):
    """Seed ``layer`` (a Dropout) or the Dropout layers inside it from ``path``, the
    model's seed then the layer's position in each enclosing block."""
    if isinstance(layer, Dropout):
        layer.seed = int(numpy.random.SeedSequence(path).generate_state(1, numpy.uint64)[0])
    for index, sublayer in enumerate(getattr(layer, "sublayers", ())):
        _seed_dropout(sublayer, path + [index])


def _check_strategy(strategy, name, allow_none=False):
    if (strategy is None and allow_none) or isinstance(strategy, Strategy):
        return
    raise TypeError(f"{name}: expected a dnn.distributed.DataParallel"
                    f"{' or None' if allow_none else ''}; got {type(strategy).__name__}")
