"""``Sequential``: a stack of layers, its weights, and the math of one step.

Parameters and gradients live in one flat buffer each (per model dtype), with one view
per weight, so the optimizer step is a single fused pass over the buffer. Initial
weights are drawn on the host from the model's seed, so a seed gives the same network
on every backend. The training loop is ``dnn.trainer.Trainer``.
"""
from __future__ import annotations

import numpy

from . import backend_scope, data_adapter, losses as losses_mod, metrics as metrics_mod
from . import model_file, optimizers as optimizers_mod
from .buffer_cache import BufferCache
from .layers import Activation, Dense, Dropout, Layer
from .nan_guard import NonFiniteLossError
from .summary import summary_text
from .trainer import Trainer
from .validation import check_dtype, check_nonnegative_int, check_positive_int

__all__ = ["NonFiniteLossError", "Sequential"]

_ALIGN = 16  # elements: each weight view starts on a 64-byte boundary (float32)


class Sequential:
    """``Sequential(layers, input_dim=None, seed=None, dtype="float32")``."""

    def __init__(self, layers=None, input_dim=None, seed=None, dtype="float32",
                 name="sequential"):
        self.name = name
        self.layers: list[Layer] = []
        self.built = False
        self.input_dim = None if input_dim is None else check_positive_int(input_dim,
                                                                          "input_dim")
        self.output_dim = None
        if seed is None:
            seed = int(numpy.random.SeedSequence().entropy % (2**63))
        self.seed = check_nonnegative_int(seed, "seed")
        # dtype: weights, gradients and optimizer state; compute_dtype: activations.
        # They differ only under the policy "mixed_bfloat16".
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
        # JSON-serialisable extras saved with the model (e.g. the CLI's feature scaling).
        self.metadata = {}
        self.flat_params = None  # every weight, one flat device buffer (views per layer)
        self.flat_grads = None  # their gradients, laid out alike
        self.buffers = None  # BufferCache: everything whose shape follows the batch size
        self._compute_params = None  # the weights the layers compute with (bf16 if mixed)
        self._weight_views = []  # (layer, name, view of flat_params) in get_weights order
        self._logits = False  # whether the output layer hands logits to the loss
        self._trainer = None  # Trainer, once both built and compiled
        for layer in layers or []:
            self.add(layer)

    @property
    def mixed(self):
        """Whether activations are computed in a lower precision than the weights."""
        return self.compute_dtype != self.dtype

    # ------------------------------------------------------------------ structure
    def add(self, layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: layer: expected a dnn.layers.Layer; "
                            f"got {type(layer).__name__}")
        if self.built:
            raise RuntimeError("Sequential.add: the model is already built; "
                               "add layers before the first fit/build")
        self.layers.append(layer)

    def build(self, input_dim=None):
        """Create the parameters on the current backend. Called by fit if needed."""
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
                             "input_dim= to Sequential or call fit); got None")
        if not self.layers:
            raise ValueError("layers: expected at least one layer; got an empty model")
        be = self.backend = backend_scope.get_backend()
        dim, total, layout = self.input_dim, 0, []  # layout: (layer, [(offset, shape)])
        for layer in self.layers:
            dim = layer.build(dim)
            slots = []
            for _, shape in layer.param_shapes:
                slots.append((total, shape))
                total += -(-int(numpy.prod(shape)) // _ALIGN) * _ALIGN
            layout.append((layer, slots))
        self.output_dim = dim
        host = numpy.zeros(max(total, 1), dtype=self.dtype)
        rng = numpy.random.default_rng(self.seed)
        for layer, slots in layout:
            for (offset, shape), value in zip(slots, layer.initial_values(rng, self.dtype)):
                host[offset:offset + value.size] = value.ravel()
        self.flat_params = be.asarray(host)
        self.flat_grads = be.zeros(host.shape, self.dtype)
        # Under a mixed policy the layers compute with a lower-precision copy of the
        # weights, refreshed after every update; their gradients land in float32.
        self._compute_params = self.flat_params
        if self.mixed:
            self._compute_params = be.empty(host.shape, self.compute_dtype)
        self.refresh_compute_weights()
        self.buffers = BufferCache()
        for index, (layer, slots) in enumerate(layout):
            layer.bind(be, [be.view(self._compute_params, o, s) for o, s in slots],
                       [be.view(self.flat_grads, o, s) for o, s in slots], self.compute_dtype,
                       self.buffers)
            self._weight_views += [(layer, name, be.view(self.flat_params, o, s))
                                   for (name, _), (o, s) in zip(layer.param_shapes, slots)]
            if isinstance(layer, Dropout):
                layer.seed = int(numpy.random.SeedSequence([self.seed, index])
                                 .generate_state(1, numpy.uint64)[0])
        self.built = True
        if self.loss is not None:
            self._configure_compiled()
        return self

    # -------------------------------------------------------------------- compile
    def compile(self, loss, optimizer="rmsprop", metrics=None, steps_per_execution=1):
        """Choose the loss, optimizer and metrics, by name or object.

        ``steps_per_execution``: training steps per captured-graph launch (as Keras):
        with K > 1 and a captured step (a GPU, or ``fit(cuda_graph=True)``), K steps
        replay as one graph that gathers its own batches on the device."""
        self.steps_per_execution = check_positive_int(steps_per_execution,
                                                      "steps_per_execution")
        self.loss = losses_mod.get(loss)
        self.optimizer = optimizers_mod.get(optimizer)
        if metrics is None:
            metrics = []
        elif isinstance(metrics, (str, metrics_mod.Metric)):
            metrics = [metrics]
        self.metrics = [metrics_mod.get(m) for m in metrics]
        if self.built:
            self._configure_compiled()
        return self

    def _configure_compiled(self):
        """Tell the output layer whether the loss consumes logits, bind the metrics,
        and give the optimizer its state. A new Trainer drops the captured steps and
        the NaN guard's snapshot, which point at the old optimizer's state."""
        activation = self._output_activation()
        self._logits = self.loss.uses_logits(activation)
        for layer in self.layers:
            layer.emit_logits = False
        self.layers[-1].emit_logits = self._logits
        for metric in self.metrics:
            metric.bind(self.loss, activation, self._logits)
        self.optimizer.build(self.backend, self.flat_params.shape[0], self.dtype)
        if self._trainer is not None:
            self._trainer.captured.clear()
        self._trainer = Trainer(self)

    def _output_activation(self):
        last = self.layers[-1]
        return last.activation if isinstance(last, (Dense, Activation)) else "linear"

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
            self.loss_and_backward(be.zeros((2, self.input_dim), self.compute_dtype),
                                   be.zeros(y_shape, self.loss.target_dtype(self.dtype)),
                                   True, self.optimizer.iterations)

    # ------------------------------------------------------- the math of one step
    def _forward(self, x, training, step=0):
        for layer in self.layers:
            x = layer.forward(x, training, step)
        return x

    def output(self, xb, training=False, step=0):
        """The network's output for a batch, in the weight dtype: under a mixed policy
        the low-precision output is cast up so that losses and metrics run in float32."""
        out = self._forward(xb, training, step)
        if self.mixed:
            out = self.backend.cast(out, out=self._batch_buffer(xb.shape[0], "mixed_out",
                                                                self.dtype))
        return out

    def _batch_buffer(self, rows, tag, dtype):
        return self.buffers.get(rows, tag, lambda r: self.backend.empty((r, self.output_dim),
                                                                        dtype))

    def output_and_loss(self, xb, yb, training=False, step=0):
        """``(output, 0-d device loss)``; the loss gradient is left in a batch buffer."""
        out = self.output(xb, training, step)
        loss, grad = self.loss(self.backend, out, yb,
                               grad_out=self._batch_buffer(xb.shape[0], "loss_grad", self.dtype))
        return out, loss, grad

    def loss_and_backward(self, xb, yb, training, step):
        """Forward, loss and backward of one batch: fills the gradient buffer and
        returns ``(output, 0-d device loss)``."""
        out, loss, grad = self.output_and_loss(xb, yb, training, step)
        if self.mixed:
            grad = self.backend.cast(grad, out=self._batch_buffer(xb.shape[0], "mixed_grad",
                                                                  self.compute_dtype))
        for i in range(len(self.layers) - 1, -1, -1):
            grad = self.layers[i].backward(grad, need_dx=i > 0)
        return out, loss

    def refresh_compute_weights(self):
        """Refresh the low-precision copy of the weights (mixed policy only)."""
        if self.mixed:
            self.backend.cast(self.flat_params, out=self._compute_params)

    def update_metrics(self, out, yb, totals):
        """Add this batch to each metric's device total: ``totals[i]`` is a (1,) view."""
        for metric, total in zip(self.metrics, totals):
            metric.update(self.backend, out, yb, total)

    def logs(self, sums, n):
        """``{"loss": mean, metric: value}`` from host totals over ``n`` samples:
        ``sums[0]`` the loss times rows, then one total per metric."""
        logs = {"loss": sums[0] / n}
        for metric, total in zip(self.metrics, sums[1:]):
            logs[metric.name] = total / metric.denominator(n, self.output_dim)
        return logs

    # ---------------------------------------------------------- fit/evaluate/predict
    def fit(self, x, y, epochs=1, batch_size=32, validation_split=0.0, validation_data=None,
            shuffle=True, verbose=1, callbacks=None, initial_epoch=0, terminate_on_nan=True,
            cuda_graph="auto"):
        """Train for ``epochs - initial_epoch`` epochs. Returns a History whose
        ``.history`` maps "loss", each metric and their "val_" forms to per-epoch lists.

        ``cuda_graph``: "auto" captures the training step as a CUDA graph and replays
        it where the backend supports graphs (CuPy) and nothing in the step needs the
        host (``clipnorm`` does); True forces the captured-step code path (on NumPy a
        replay re-runs the step); False runs every step eagerly.
        """
        self._require_compiled("fit")
        x, y = data_adapter.features_and_targets(self, x, y)  # builds from the data's width
        return self._trainer.fit(x, y, epochs, batch_size, validation_split, validation_data,
                                 shuffle, verbose, callbacks, initial_epoch, terminate_on_nan,
                                 cuda_graph)

    def evaluate(self, x, y, batch_size=256, verbose=0):
        """Mean loss and metrics over (x, y): ``{"loss": ..., "accuracy": ...}``."""
        self._require_compiled("evaluate")
        batch_size = check_positive_int(batch_size, "batch_size")
        x, y = data_adapter.features_and_targets(self, x, y, what="evaluate")
        logs = self._trainer.evaluate(x, y, batch_size)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        return logs

    def predict(self, x, batch_size=256, verbose=0):
        """Outputs as a NumPy array of shape (n, output_dim), with the output
        activation applied (probabilities for sigmoid/softmax outputs)."""
        batch_size = check_positive_int(batch_size, "batch_size")
        x_dev = data_adapter.features(self, x)
        result = numpy.empty((x_dev.shape[0], self.output_dim), dtype=self.dtype)
        for start in range(0, x_dev.shape[0], batch_size):
            out = self.output(x_dev[start:start + batch_size])
            if self._logits:
                out = self.backend.activation(self._output_activation(), out)
            result[start:start + out.shape[0]] = self.backend.to_numpy(out)
        return result

    # ------------------------------------------------------------------- weights
    def _require_built(self, what):
        if not self.built:
            raise RuntimeError(f"{what}: the model has no weights yet; call "
                               f"model.build(input_dim) or fit first")

    def get_weights(self):
        """NumPy copies ``[W0 (in, out), b0, W1, b1, ...]``."""
        self._require_built("get_weights")
        return [self.backend.to_numpy(p).copy() for _, _, p in self._weight_views]

    def set_weights(self, weights):
        self._require_built("set_weights")
        targets = self._weight_views
        weights = list(weights)
        if len(weights) != len(targets):
            raise ValueError(f"set_weights: expected {len(targets)} arrays "
                             f"({', '.join(str(tuple(p.shape)) for _, _, p in targets)}); "
                             f"got {len(weights)}")
        host = []
        for i, ((layer, name, p), w) in enumerate(zip(targets, weights)):
            w = numpy.asarray(w)
            if w.shape != tuple(p.shape):
                raise ValueError(f"set_weights: weights[{i}] ({layer.describe()} {name}): "
                                 f"expected shape {tuple(p.shape)}; got {w.shape}")
            if w.dtype.kind not in "biuf":
                raise TypeError(f"set_weights: weights[{i}]: expected numeric; "
                                f"got dtype {w.dtype}")
            host.append(w)
        for (_, _, p), w in zip(targets, host):
            self.backend.copy(self.backend.asarray(w, dtype=self.dtype), out=p)
        self.refresh_compute_weights()

    def count_params(self):
        return sum(int(numpy.prod(s)) for layer in self.layers for _, s in layer.param_shapes)

    def loss_and_gradients(self, x, y, training=False):
        """``(loss, [dW0, db0, ...])`` on the whole of (x, y), in get_weights order.

        ``training=True`` applies dropout with the mask of the current step.
        """
        self._require_compiled("loss_and_gradients")
        x, y = data_adapter.features_and_targets(self, x, y, what="loss_and_gradients")
        _, loss = self.loss_and_backward(x, y, training,
                                         self.optimizer.iterations)
        return self.backend.to_float(loss), [self.backend.to_numpy(g).copy()
                                             for layer in self.layers for g in layer.grads]

    # ---------------------------------------------------------------- save/show
    def get_config(self):
        return {"name": self.name, "input_dim": self.input_dim, "seed": self.seed,
                "dtype": self.dtype_policy,
                "layers": [layer.get_config() for layer in self.layers]}

    def save(self, path):
        """Write weights, config and optimizer state to ``path`` (.npz), atomically."""
        self._require_built("save")
        compiled = None if self.loss is None else {
            "loss": self.loss.get_config(), "optimizer": self.optimizer.get_config(),
            "metrics": [m.name for m in self.metrics],
            "steps_per_execution": self.steps_per_execution}
        model_file.write(path, self.get_config(), self.get_weights(), compiled,
                         None if compiled is None else self.optimizer.get_state(),
                         self.epochs_done, self.train_steps, self.metadata)

    def summary(self, print_fn=print):
        """Print layers, output shapes and parameter counts, and the backend, device
        and dtype."""
        print_fn(summary_text(self))
