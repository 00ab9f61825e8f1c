"""``Sequential``: a stack of layers trained through the backend interface.

Parameters and gradients live in one flat buffer each (per model dtype), with one
view per weight, so the optimizer step is a single fused pass over the buffer.
Initial weights are drawn on the host from the model's seed, so a seed gives the
same network on every backend. The shuffle order of epoch ``e`` is a function of
``(seed, e)`` and dropout masks of ``(seed, layer, step)``, so a run can be resumed
exactly.
"""
from __future__ import annotations

import signal
import sys
import threading
import warnings

import numpy

from . import backend_scope, losses as losses_mod, metrics as metrics_mod
from . import model_file, optimizers as optimizers_mod
from .callbacks import CallbackList, History, ProgressLogger, TerminateOnNaN
from .layers import Activation, Dense, Dropout, Layer
from .validation import (check_dtype, check_features, check_nonnegative_int,
                         check_positive_int, check_targets)

_ALIGN = 16  # elements: each weight view starts on a 64-byte boundary (float32)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the model keeps its last finite weights."""


class _StopOnInterrupt:
    """During fit, the first Ctrl-C asks training to stop after the current step (fit
    then returns the History so far, with ``history.interrupted`` set); a second one
    interrupts at once. Only the main thread can take signals; elsewhere this does
    nothing."""

    def __init__(self, model):
        self.model = model
        self.previous = None

    def _handler(self, signum, frame):
        if self.model.history.interrupted:
            signal.signal(signal.SIGINT, self.previous)
            raise KeyboardInterrupt
        self.model.history.interrupted = True
        self.model.stop_training = True
        print("\nInterrupted: stopping after the current step (Ctrl-C again to abort now)",
              file=sys.stderr)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


class Sequential:
    """``Sequential(layers, input_dim=None, seed=None, dtype="float32")``."""

    def __init__(self, layers=None, input_dim=None, seed=None, dtype="float32",
                 name="sequential"):
        self.name = name
        self.layers: list[Layer] = []
        for layer in layers or []:
            self.add(layer)
        self.input_dim = None if input_dim is None else check_positive_int(input_dim,
                                                                          "input_dim")
        if seed is None:
            seed = int(numpy.random.SeedSequence().entropy % (2**63))
        self.seed = check_nonnegative_int(seed, "seed")
        # dtype: weights, gradients and optimizer state; compute_dtype: activations.
        # They differ only under the policy "mixed_bfloat16".
        self.dtype, self.compute_dtype = check_dtype(dtype)
        self.dtype_policy = dtype if self.mixed else self.dtype.name
        self.backend = None
        self.built = False
        self.loss = None
        self.optimizer = None
        self.metrics = []
        self.stop_training = False
        self.history = None
        self.epochs_done = 0  # epochs completed over all fit calls (for resume)
        # Optimizer steps taken, counted on the host (the device has its own count in
        # optimizer.iterations, which keys the dropout masks), saved for resume.
        self.train_steps = 0
        # JSON-serialisable extras saved with the model (e.g. the CLI's feature scaling).
        self.metadata = {}

    @property
    def mixed(self):
        """Whether activations are computed in a lower precision than the weights."""
        return self.compute_dtype != self.dtype

    # ------------------------------------------------------------------ structure
    def add(self, layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: layer: expected a dnn.layers.Layer; "
                            f"got {type(layer).__name__}")
        if getattr(self, "built", False):
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
        dim = self.input_dim
        layout = []  # (layer, [(offset, shape)])
        total = 0
        for layer in self.layers:
            dim = layer.build(dim)
            slots = []
            for _, shape in layer.param_shapes:
                slots.append((total, shape))
                size = int(numpy.prod(shape))
                total += -(-size // _ALIGN) * _ALIGN
            layout.append((layer, slots))
        self.output_dim = dim
        host = numpy.zeros(max(total, 1), dtype=self.dtype)
        rng = numpy.random.default_rng(self.seed)
        for layer, slots in layout:
            for (offset, shape), value in zip(slots, layer.initial_values(rng, self.dtype)):
                host[offset:offset + value.size] = value.ravel()
        self._params = be.asarray(host)
        self._grads = be.zeros(host.shape, self.dtype)
        # Under a mixed policy the layers compute with a lower-precision copy of the
        # weights, refreshed after every update; their gradients land in float32.
        self._compute_params = self._params
        if self.mixed:
            self._compute_params = be.empty(host.shape, self.compute_dtype)
            be.cast(self._params, out=self._compute_params)
        self._weight_views = []  # (layer, name, master view) in get_weights order
        for index, (layer, slots) in enumerate(layout):
            layer.bind(be, [be.view(self._compute_params, o, s) for o, s in slots],
                       [be.view(self._grads, o, s) for o, s in slots], self.compute_dtype)
            self._weight_views += [(layer, name, be.view(self._params, o, s))
                                   for (name, _), (o, s) in zip(layer.param_shapes, slots)]
            if isinstance(layer, Dropout):
                layer.seed = int(numpy.random.SeedSequence([self.seed, index])
                                 .generate_state(1, numpy.uint64)[0])
        self.built = True
        self._loss_grad = {}
        if self.loss is not None:
            self._configure_output()
            self.optimizer.build(be, self._params.shape[0], self.dtype)
        return self

    # -------------------------------------------------------------------- compile
    def compile(self, loss, optimizer="rmsprop", metrics=None):
        """Choose the loss, optimizer and metrics, by name or object."""
        self.loss = losses_mod.get(loss)
        self.optimizer = optimizers_mod.get(optimizer)
        if metrics is None:
            metrics = []
        elif isinstance(metrics, (str, metrics_mod.Metric)):
            metrics = [metrics]
        self.metrics = [metrics_mod.get(m) for m in metrics]
        # Captured steps and the NaN guard's snapshot point at the old optimizer's state.
        for cache in ("_graphs", "_snap"):
            self.__dict__.pop(cache, None)
        if self.built:
            self._configure_output()
            self.optimizer.build(self.backend, self._params.shape[0], self.dtype)
        return self

    def _output_activation(self):
        last = self.layers[-1]
        return last.activation if isinstance(last, (Dense, Activation)) else "linear"

    def _configure_output(self):
        """Decide whether the loss consumes logits and tell the output layer."""
        activation = self._output_activation()
        logits = self.loss.uses_logits(activation)
        for layer in self.layers:
            layer.emit_logits = False
        self.layers[-1].emit_logits = logits
        self._logits = logits
        for metric in self.metrics:
            metric.bind(self.loss, activation, logits)

    def _require_compiled(self, what):
        if self.loss is None:
            raise RuntimeError(f"{what}: the model is not compiled; call "
                               f"model.compile(loss=..., optimizer=...) first")

    # ------------------------------------------------------------------ data prep
    def _host_view(self, data, name):
        """Host data as is; this backend's own device arrays are read back once for
        validation (at fit/evaluate entry, never inside a step); anything else that
        lives on a device is an error naming both sides."""
        be = self.backend or backend_scope.get_backend()
        be.check_array(data, name)
        if be.is_native(data) and not isinstance(data, numpy.ndarray):
            return be.to_numpy(data)
        return data

    def _prepare(self, x, y, what):
        """Validate host data, build if needed; return (x, y) host arrays."""
        x = check_features(self._host_view(x, "x"), "x", self.input_dim)
        y = self._host_view(y, "y")
        if not self.built:
            self.build(x.shape[1])
        y = check_targets(y, x.shape[0], "y")
        y = self.loss.prepare_targets(y, self.output_dim)
        if y.dtype.kind == "f" or self.loss.name != "sparse_categorical_crossentropy":
            y = y.astype(self.dtype, copy=False)
        return x.astype(self.dtype, copy=False), y

    # ---------------------------------------------------------------- the step
    def _forward(self, x, training, step=0):
        for layer in self.layers:
            x = layer.forward(x, training, step)
        return x

    def _backward(self, grad):
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            grad = self.layers[i].backward(grad, need_dx=i > 0)

    def _loss_grad_buffer(self, n):
        buf = self._loss_grad.get(n)
        if buf is None:
            if len(self._loss_grad) >= 4:
                self._loss_grad.clear()
            buf = self._loss_grad[n] = self.backend.empty((n, self.output_dim), self.dtype)
        return buf

    def _output(self, xb, training, step=0):
        """The network's output for a batch, in the weight dtype: under a mixed policy
        the low-precision output is cast up so that losses and metrics run in float32."""
        out = self._forward(xb, training, step)
        if self.mixed:
            out = self.backend.cast(out, out=self._mixed_buffer("out", xb.shape[0],
                                                                self.dtype))
        return out

    def _mixed_buffer(self, tag, n, dtype):
        cache = self.__dict__.setdefault("_mixed", {})
        buf = cache.get((tag, n))
        if buf is None:
            if len(cache) >= 8:
                cache.clear()
            buf = cache[(tag, n)] = self.backend.empty((n, self.output_dim), dtype)
        return buf

    def _loss_and_backward(self, xb, yb, training, step):
        out = self._output(xb, training, step)
        loss, grad = self.loss(self.backend, out, yb,
                               grad_out=self._loss_grad_buffer(xb.shape[0]))
        if self.mixed:
            grad = self.backend.cast(grad, out=self._mixed_buffer("grad", xb.shape[0],
                                                                  self.compute_dtype))
        self._backward(grad)
        return out, loss

    def _sync_compute_params(self):
        """Refresh the low-precision copy of the weights (mixed policy only)."""
        if self.mixed:
            self.backend.cast(self._params, out=self._compute_params)

    def _metric_sums(self, out, yb):
        return [m.update(self.backend, out, yb) for m in self.metrics]

    # ------------------------------------------------------------------------ fit
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
        epochs = check_nonnegative_int(epochs, "epochs")
        batch_size = check_positive_int(batch_size, "batch_size")
        initial_epoch = check_nonnegative_int(initial_epoch, "initial_epoch")
        if verbose not in (0, 1, 2, "auto"):
            raise ValueError(f"verbose: expected 0, 1, 2 or 'auto'; got {verbose!r}")
        if not (isinstance(validation_split, (int, float)) and 0 <= validation_split < 1):
            raise ValueError(f"validation_split: expected a number in [0, 1); "
                             f"got {validation_split!r}")
        if cuda_graph not in ("auto", True, False):
            raise ValueError(f"cuda_graph: expected 'auto', True or False; got {cuda_graph!r}")
        x, y = self._prepare(x, y, "fit")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data: expected a tuple (x_val, y_val); got "
                                 f"{type(validation_data).__name__}")
            val = self._prepare(*validation_data, "validation_data")
        elif validation_split:
            # As Keras: the last fraction of the data, before any shuffling.
            split = int(round(x.shape[0] * (1 - validation_split)))
            if split <= 0 or split >= x.shape[0]:
                raise ValueError(f"validation_split: {validation_split} leaves an empty "
                                 f"training or validation set for {x.shape[0]} samples")
            val = (x[split:], y[split:])
            x, y = x[:split], y[:split]
        else:
            val = None

        be = self.backend
        n = x.shape[0]
        steps = -(-n // batch_size)
        x_dev, y_dev = be.asarray(x, dtype=self.compute_dtype), be.asarray(y)
        val_dev = None if val is None else (be.asarray(val[0], dtype=self.compute_dtype),
                                            be.asarray(val[1]))

        cbs = list(callbacks or [])
        if terminate_on_nan and not any(isinstance(c, TerminateOnNaN) for c in cbs):
            cbs.append(TerminateOnNaN())
        nan_guard = any(isinstance(c, TerminateOnNaN) for c in cbs)
        self.history = History()
        cbs.insert(0, self.history)
        if verbose:
            cbs.append(ProgressLogger(verbose=verbose))
        cb = CallbackList(cbs, model=self, params={
            "epochs": epochs, "steps": steps, "samples": n, "batch_size": batch_size,
            "verbose": verbose, "metrics": self._log_names(val is not None)})
        self.stop_training = False
        if cuda_graph is True and be.supports_graphs and self.optimizer.clipnorm is not None:
            raise ValueError("cuda_graph: expected 'auto' or False with clipnorm (the global "
                             "norm needs temporaries a captured graph cannot own); got True")
        use_graph = cuda_graph is True or (
            cuda_graph == "auto" and be.supports_graphs and self.optimizer.clipnorm is None)
        self._graph_fallback = cuda_graph == "auto"
        self.history.interrupted = False
        cb.on_train_begin()
        try:
            with _StopOnInterrupt(self):
                for epoch in range(initial_epoch, epochs):
                    cb.on_epoch_begin(epoch)
                    logs, complete = self._run_epoch(x_dev, y_dev, n, batch_size, steps, epoch,
                                                     shuffle, nan_guard, cb, use_graph)
                    if val_dev is not None:
                        val_logs = self._evaluate_arrays(*val_dev, max(batch_size, 256))
                        logs.update({"val_" + k: v for k, v in val_logs.items()})
                    if complete:  # a partial epoch is not resumable as done
                        self.epochs_done = epoch + 1
                    cb.on_epoch_end(epoch, logs)
                    if self.stop_training:
                        break
        finally:
            cb.on_train_end()
        return self.history

    def _log_names(self, with_val):
        names = ["loss"] + [m.name for m in self.metrics]
        return names + ["val_" + k for k in names] if with_val else names

    def _run_epoch(self, x_dev, y_dev, n, batch_size, steps, epoch, shuffle, nan_guard, cb,
                   use_graph=False):
        """One epoch. Reads the device only where it must: the loss once at the end, plus
        at progress points when a callback wants per-batch logs. On a backend whose host
        reads are free (NumPy) the non-finite check runs every step; elsewhere a device
        flag records the first bad step, the optimizer skips every update from then on,
        and the flag is read at those same points. With ``use_graph``, full batches
        replay a captured step (see ``_graph_step``); the last partial batch runs eagerly.
        """
        be = self.backend
        if shuffle:
            order = numpy.random.default_rng([self.seed, epoch]).permutation(n)
            order_dev = be.asarray(order)
        metric_sums = [0.0] * len(self.metrics)
        optimizer = self.optimizer
        host_guard = nan_guard and be.cheap_host_reads
        device_guard = nan_guard and not be.cheap_host_reads
        flags = None
        if nan_guard:
            self._snapshot()
        if device_guard:
            flags = self._nan_flags()
            first_step = optimizer.step_count  # one read per epoch
        acc = self._loss_accumulator()
        every = 1 if be.cheap_host_reads else max(1, steps // 20)
        for step in range(steps):
            start, stop = step * batch_size, min(n, (step + 1) * batch_size)
            rows = stop - start
            xb = self._batch_buffer("x", x_dev, rows)
            yb = self._batch_buffer("y", y_dev, rows)
            if shuffle:
                idx = order_dev[start:stop]
                be.take_rows(x_dev, idx, out=xb)
                be.take_rows(y_dev, idx, out=yb)
            else:
                be.copy(x_dev[start:stop], out=xb)
                be.copy(y_dev[start:stop], out=yb)
            context = (epoch, step, steps) if host_guard else None
            if use_graph and rows == batch_size:
                out = self._graph_step(xb, yb, flags, acc, context)
            else:
                out = self._train_step(xb, yb, flags, acc, context)
            metric_sums = [a + b for a, b in zip(metric_sums, self._metric_sums(out, yb))]
            self.train_steps += 1
            readback = cb.wants_batch_logs and (step % every == every - 1 or step == steps - 1)
            if readback:
                if device_guard:
                    self._check_nan_flags(epoch, steps, first_step)
                cb.on_train_batch_end(step, {"loss": be.to_float(acc[0]) / stop,
                                             "seen": stop})
            if self.stop_training:
                n = stop
                break
        if device_guard:
            self._check_nan_flags(epoch, steps, first_step)
        logs = {"loss": be.to_float(acc[0]) / n}
        for metric, total in zip(self.metrics, metric_sums):
            logs[metric.name] = be.to_float(total) / metric.denominator(n, self.output_dim)
        return logs, stop == x_dev.shape[0]

    def _train_step(self, xb, yb, flags, acc, context):
        """Forward, loss, backward, update, and ``acc += loss * rows``, all on the
        device. ``context`` (epoch, step, steps) asks for the host-side non-finite check
        before the update; ``flags`` for the device-side one. Returns the output."""
        be, optimizer = self.backend, self.optimizer
        out, loss = self._loss_and_backward(xb, yb, True, optimizer.iterations)
        if context is not None and not be.to_float(be.all_finite(loss)):
            self._stop_on_nonfinite(loss, *context)
        skip = None
        if flags is not None:
            be.guard_finite(loss, optimizer.iterations, *flags)
            skip = flags[0]
        optimizer.apply_gradients(self._params, self._grads, skip=skip)
        self._sync_compute_params()
        be.accumulate(acc, loss, xb.shape[0])
        return out

    def _graph_step(self, xb, yb, flags, acc, context):
        """Run one step by replaying a captured graph of ``_train_step`` over the fixed
        batch buffers. The first step of a batch size runs eagerly (it creates every
        workspace, so capture allocates nothing); the next captures, and a change of
        learning rate (a kernel argument in the graph) captures again."""
        rows = xb.shape[0]
        graphs = self.__dict__.setdefault("_graphs", {})
        entry = graphs.get(rows)
        lr = self.optimizer.learning_rate
        if entry is None or entry.get("eager"):
            graphs.setdefault(rows, {"lr": None, "graph": None})
            return self._train_step(xb, yb, flags, acc, context)
        if entry["graph"] is None or entry["lr"] != lr:
            holder = {}

            def body():
                holder["out"] = self._train_step(xb, yb, flags, acc, context)

            try:
                graph = self.backend.capture(body)
            except RuntimeError as exc:
                if not self.__dict__.get("_graph_fallback"):
                    raise
                # "auto": a step the backend cannot capture still trains, eagerly.
                warnings.warn(f"fit: running eagerly, the training step could not be "
                              f"captured as a CUDA graph: {exc}", RuntimeWarning, stacklevel=3)
                entry["graph"] = entry["lr"] = None
                entry["eager"] = True
                return self._train_step(xb, yb, flags, acc, context)
            # The graph points into these buffers: keep every one alive with it, even if
            # a workspace cache later drops them.
            keep = [xb, yb, acc, flags, self._params, self._grads,
                    self._loss_grad.get(rows)] + [layer._workspaces.get(rows)
                                                  for layer in self.layers]
            entry.update(graph=graph, lr=lr, keep=keep, out=None, holder=holder)
        entry["graph"].replay()
        return entry["holder"]["out"]

    def _loss_accumulator(self):
        """Zeroed (1,) device buffer for the epoch's running sum of loss * rows."""
        acc = self.__dict__.get("_acc")
        if acc is None:
            acc = self._acc = self.backend.zeros((1,), self.dtype)
        self.backend.fill(acc, 0)
        return acc

    def _nan_flags(self):
        """Zeroed device flag (int32) and bad-step record (int64) for this epoch."""
        be = self.backend
        flags = self.__dict__.get("_flags")
        if flags is None:
            flags = self._flags = (be.zeros((1,), "int32"), be.zeros((1,), "int64"))
        be.fill(flags[0], 0)
        return flags

    def _check_nan_flags(self, epoch, steps, first_step):
        be = self.backend
        flag, bad_step = self._flags
        if int(be.to_numpy(flag)[0]):
            step = int(be.to_numpy(bad_step)[0]) - first_step
            self.train_steps = first_step + step
            self._stop_on_nonfinite(float("nan"), epoch, step, steps)

    def _snapshot(self):
        """Keep a device copy of the weights and optimizer state (once per epoch)."""
        be = self.backend
        snap = self.__dict__.get("_snap")
        if snap is None:
            snap = self._snap = {"params": be.empty(self._params.shape, self.dtype)}
            for name, buf in self.optimizer.state.items():
                snap[name] = be.empty(buf.shape, buf.dtype)
            snap["iterations"] = be.empty(self.optimizer.iterations.shape, "int64")
        be.copy(self._params, out=snap["params"])
        for name, buf in self.optimizer.state.items():
            be.copy(buf, out=snap[name])
        be.copy(self.optimizer.iterations, out=snap["iterations"])
        self._snap_steps = self.train_steps

    def _stop_on_nonfinite(self, loss, epoch, step, steps):
        """Raise NonFiniteLossError. The bad step's update was never applied; if an
        earlier step already left non-finite weights (a finite loss with an infinite
        gradient), roll back to the copy taken at the start of this epoch."""
        be = self.backend
        where = f"epoch {epoch + 1}, step {step + 1}/{steps}"
        restored = ""
        if not be.to_float(be.all_finite(self._params)):
            snap = self._snap
            be.copy(snap["params"], out=self._params)
            for name, buf in self.optimizer.state.items():
                be.copy(snap[name], out=buf)
            be.copy(snap["iterations"], out=self.optimizer.iterations)
            self._sync_compute_params()
            self.train_steps = self._snap_steps
            restored = f"; the weights had become non-finite, so they were restored to the " \
                       f"start of epoch {epoch + 1}"
        raise NonFiniteLossError(
            f"fit: non-finite loss {be.to_float(loss) if hasattr(loss, 'shape') else loss} at {where}; training stopped and the "
            f"model keeps its last finite weights{restored} (lower the learning rate, or "
            f"clip gradients with clipnorm=)")

    def _batch_buffer(self, tag, source, rows):
        key = (tag, rows)
        cache = self.__dict__.setdefault("_batch_buffers", {})
        buf = cache.get(key)
        if buf is None or buf.dtype != source.dtype or buf.shape[1:] != source.shape[1:]:
            if len(cache) >= 8:
                cache.clear()
            buf = cache[key] = self.backend.empty((rows,) + tuple(source.shape[1:]),
                                                  source.dtype)
        return buf

    # ------------------------------------------------------------ evaluate/predict
    def evaluate(self, x, y, batch_size=256, verbose=0):
        """Mean loss and metrics over (x, y): ``{"loss": ..., "accuracy": ...}``."""
        self._require_compiled("evaluate")
        batch_size = check_positive_int(batch_size, "batch_size")
        x, y = self._prepare(x, y, "evaluate")
        logs = self._evaluate_arrays(self.backend.asarray(x, dtype=self.compute_dtype),
                                     self.backend.asarray(y), batch_size)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        return logs

    def _evaluate_arrays(self, x_dev, y_dev, batch_size):
        be = self.backend
        n = x_dev.shape[0]
        loss_sum = 0.0
        metric_sums = [0.0] * len(self.metrics)
        for start in range(0, n, batch_size):
            xb, yb = x_dev[start:start + batch_size], y_dev[start:start + batch_size]
            out = self._output(xb, False)
            loss, _ = self.loss(be, out, yb, grad_out=self._loss_grad_buffer(xb.shape[0]))
            loss_sum = loss_sum + loss * xb.shape[0]
            metric_sums = [a + b for a, b in zip(metric_sums, self._metric_sums(out, yb))]
        logs = {"loss": be.to_float(loss_sum) / n}
        for metric, total in zip(self.metrics, metric_sums):
            logs[metric.name] = be.to_float(total) / metric.denominator(n, self.output_dim)
        return logs

    def predict(self, x, batch_size=256, verbose=0):
        """Outputs as a NumPy array of shape (n, output_dim), with the output
        activation applied (probabilities for sigmoid/softmax outputs)."""
        batch_size = check_positive_int(batch_size, "batch_size")
        x = check_features(self._host_view(x, "x"), "x", self.input_dim)
        if not self.built:
            self.build(x.shape[1])
        be = self.backend
        x_dev = be.asarray(x, dtype=self.compute_dtype)
        result = numpy.empty((x.shape[0], self.output_dim), dtype=self.dtype)
        logits = getattr(self, "_logits", False)
        for start in range(0, x.shape[0], batch_size):
            out = self._output(x_dev[start:start + batch_size], False)
            if logits:
                out = be.activation(self._output_activation(), out)
            result[start:start + out.shape[0]] = be.to_numpy(out)
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
        self._sync_compute_params()

    def count_params(self):
        return sum(int(numpy.prod(s)) for layer in self.layers for _, s in layer.param_shapes)

    def loss_and_gradients(self, x, y, training=False):
        """``(loss, [dW0, db0, ...])`` on the whole of (x, y), in get_weights order.

        ``training=True`` applies dropout with the mask of the current step.
        """
        self._require_compiled("loss_and_gradients")
        x, y = self._prepare(x, y, "loss_and_gradients")
        be = self.backend
        _, loss = self._loss_and_backward(be.asarray(x, dtype=self.compute_dtype),
                                          be.asarray(y), training, self.optimizer.iterations)
        return be.to_float(loss), [be.to_numpy(g).copy() for layer in self.layers
                                   for g in layer.grads]

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
            "metrics": [m.name for m in self.metrics]}
        model_file.write(path, self.get_config(), self.get_weights(), compiled,
                         None if compiled is None else self.optimizer.get_state(),
                         self.epochs_done, self.train_steps, self.metadata)

    def summary(self, print_fn=print):
        """Print layers, output shapes and parameter counts, and the backend, device
        and dtype."""
        from .summary import summary_text

        print_fn(summary_text(self))
