"""``DataParallelReplica``: one model's part in data-parallel training, the replica
interface of ``dnn.training.replica`` across ranks: gradient buckets summed as the
backward pass finishes them, the global loss for the NaN guard, the averaged state, and
every decision agreed by all ranks."""
from __future__ import annotations

from ..training.epoch_plan import split_rows
from ..training.replica import Replica


class DataParallelReplica(Replica):
    """See the module docstring and ``dnn.distributed``."""

    lockstep = True
    shares_batches = True

    def __init__(self, strategy, model, collectives):
        self.strategy = strategy
        self.model = model
        self.collectives = collectives
        self.rank, self.world_size = strategy.rank, strategy.world_size
        self.communicator_name = collectives.name
        self.capturable = collectives.capturable
        self.adds_penalty_gradients = self.rank == 0
        self.reducer = GradientReducer(model, collectives, strategy.bucket_bytes)
        # Collectives the device cannot run in stream order (MPI's, on host arrays) are
        # host calls of the step, which a captured step holds as host nodes.
        self._host_calls = not collectives.capturable
        self.after_layer = self._after_layer
        # The non-trainable weights that layers declare drift apart across ranks (each
        # sees its own batches): BatchNormalization's moving statistics.
        self.averaged = [view for layer, name, view in model.weights.views
                         if name in layer.averaged_state]
        self._loss = model.backend.zeros((1,), model.dtype)  # the global batch's loss

    def check_same(self, what, **values):
        self.strategy.check_same(what, **values)

    def _call(self, fn, *args):
        if self._host_calls:  # looked up now: a capture intercepts the backend's calls
            return self.model.backend.host_callback(fn, *args)
        return fn(*args)

    def _after_layer(self, i):
        self._call(self.reducer.layer_done, i)

    def all_values(self, values):
        return self.strategy.all_values(values)

    def after_backward(self):
        self._call(self.reducer.finish)

    def global_loss(self, loss, scale):
        be, total = self.model.backend, self._loss
        be.fill(total, 0)
        if loss is not None:
            be.accumulate(total, loss, scale)
        self._call(self.collectives.allreduce, total)
        return total.reshape(())

    def contribute_nothing(self):
        be = self.model.backend
        be.fill(self.model.flat_grads, 0)
        for i in range(len(self.model.layers) - 1, -1, -1):
            self.reducer.layer_done(i)
        self.reducer.finish()

    def after_update(self):
        be = self.model.backend
        for view in self.averaged:
            self._call(self.collectives.allreduce, view)
            be.multiply(view, 1.0 / self.world_size, out=view)

    def agree_stop(self, stop, at_progress_point):
        if not at_progress_point:
            return False
        return self.strategy.any_rank(stop)

    def reduce_totals(self, buffer):
        self.collectives.allreduce(buffer)
        return buffer

    def evaluation_rows(self, count):
        return split_rows(count, self.world_size, self.rank)

    def on_chief(self, action, failure):
        error = result = None
        if self.rank == 0:
            try:
                result = action()
            except Exception as exc:  # every rank must still reach the agreement below
                error = exc
        failed = self.strategy.any_rank(error is not None)
        if error is not None:
            raise error
        if failed:
            raise OSError(f"{failure} (its error is in rank 0's output)")
        return result

    def barrier(self):
        """Wait until every rank is here (the benchmarks time between barriers)."""
        self.collectives.barrier()


class GradientReducer:
    """The flat gradient buffer in buckets of whole layers, the last layer first (the
    order the backward pass finishes them). ``layer_done(i)`` starts the allreduce of
    a bucket once its first layer is done; ``finish()`` waits for all of them."""

    def __init__(self, model, collectives, bucket_bytes):
        self.collectives = collectives
        be, grads = model.backend, model.flat_grads
        limit = max(1, bucket_bytes // grads.dtype.itemsize)
        self.buckets = {}  # the layer whose completion starts a bucket -> its view
        start = stop = None
        opener = None
        for i in range(len(model.layers) - 1, -1, -1):
            span = model.weights.grad_ranges[i]
            if span is None:
                continue
            stop = span[1] if stop is None else stop
            start, opener = span[0], i
            if stop - start >= limit:
                self.buckets[opener] = be.view(grads, start, (stop - start,))
                start = stop = None
        if stop is not None:
            self.buckets[opener] = be.view(grads, start, (stop - start,))
        self._handles = []

    def layer_done(self, i):
        bucket = self.buckets.get(i)
        if bucket is not None:
            self._handles.append(self.collectives.start_allreduce(bucket))
        else:
            self.collectives.progress()

    def finish(self):
        handles, self._handles = self._handles, []
        self.collectives.wait(handles)
