"""Data-parallel training across processes (MPI) and GPUs (NCCL), the way ChainerMN
and Horovod do it: the model is replicated on every rank, each rank trains on its
share of every batch, and the gradients are summed across ranks before each update.

    strategy = dnn.distributed.DataParallel()          # "auto", "mpi" or "nccl"
    model.compile(loss=..., optimizer=..., distribute=strategy)
    model.fit(x, y, batch_size=64)                     # 64 rows per rank

    $ mpiexec -n 4 python train.py

Semantics, chosen so that N ranks train exactly as one rank would on N times the batch:

- every rank passes the same ``x`` and ``y``; ``batch_size`` is per rank. The epoch's
  order comes from ``(seed, epoch)`` as always; each global batch of ``batch_size x
  N`` rows is split by rank (the last, short one as evenly as it goes);
- weights start identical: rank 0's seed and weights are broadcast when the strategy
  is attached;
- each rank scales its loss gradient by its share of the global batch and the sums
  are taken with allreduce over the flat gradient buffer, in buckets of whole layers
  that start while the backward pass is still running the layers before them; weight
  penalties' gradients are added on rank 0 only. Dropout draws, on each rank, its rows
  of the mask one rank would draw for the global batch;
- one more allreduce per step carries the global loss, so the NaN guard stops every
  rank at the same step; BatchNormalization's moving statistics are averaged across
  ranks after every step (its batch statistics are each rank's own, as with PyTorch's
  DDP without SyncBatchNorm), so the replicas stay identical;
- epoch losses and metrics are summed across ranks, so every rank (and EarlyStopping
  on every rank) sees the same logs; validation and ``evaluate`` split their rows
  across ranks; ``predict`` runs whole on each rank;
- progress output is rank 0's alone; ``model.save`` writes on rank 0 and returns on
  every rank once the file is there (call it on every rank, as ModelCheckpoint does);
- an uncaught exception on any rank prints its traceback and aborts every rank (MPI
  Abort), and MPI waits time out (``timeout`` seconds) rather than hang.

Launched without mpiexec, a strategy is a world of one and training is unchanged.
"""
from __future__ import annotations

import os
import socket
import sys
import time

import numpy

from .backends.collectives import LocalCollectives, MpiCollectives, NcclCollectives
from .layers import BatchNormalization

COMMUNICATORS = ("auto", "mpi", "nccl")
# What MPI launchers put in each rank's environment: MPICH's Hydra, Open MPI, PMIx.
_WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MPI_LOCALRANKID")

_MISSING_MPI = ("DataParallel: MPI needs mpi4py and an MPI library: pip install mpi4py "
                "mpich (or pip install '.[mpi]' in the dnn checkout)")


def _launcher_value(names, default):
    """The first of the environment variables ``names`` that holds a number."""
    for name in names:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return default


def launched_world_size():
    """The number of ranks an MPI launcher started, from the environment (1 if none)."""
    return _launcher_value(_WORLD_SIZE_VARS, 1)


def launched_rank():
    """This process's rank as an MPI launcher set it in the environment (0 if none)."""
    return _launcher_value(_RANK_VARS, 0)


def split_rows(count, world, rank):
    """``(start, stop)`` of rank ``rank``'s share of ``count`` rows: contiguous shares,
    the first ``count % world`` ranks one row longer."""
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def _mpi_world():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(_MISSING_MPI) from exc
    return MPI.COMM_WORLD


def _abort_on_uncaught_exception(comm):
    """An exception that ends one rank's script ends every rank, with its message: the
    others would otherwise wait in their next collective."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.write(f"dnn.distributed: rank {comm.Get_rank()} of {comm.Get_size()} "
                         f"raised {kind.__name__}; aborting every rank\n")
        sys.stderr.flush()
        sys.stdout.flush()
        comm.Abort(1)

    sys.excepthook = hook


class DataParallel:
    """``DataParallel(communicator="auto", bucket_mb=4.0, timeout=300.0)``: see the
    module docstring. ``communicator``: "mpi", "nccl", or "auto" (NCCL when the model
    is on the cupy backend and every rank has a GPU of its own, MPI otherwise).
    ``bucket_mb``: the gradient bytes per allreduce (whole layers, the last first).
    ``timeout``: seconds an MPI wait may take before it raises TimeoutError."""

    def __init__(self, communicator="auto", bucket_mb=4.0, timeout=300.0):
        if communicator not in COMMUNICATORS:
            raise ValueError(f"DataParallel: communicator: expected one of "
                             f"{', '.join(map(repr, COMMUNICATORS))}; got {communicator!r}")
        for name, value in (("bucket_mb", bucket_mb), ("timeout", timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"DataParallel: {name}: expected a number > 0; got "
                                 f"{value!r}")
        self.communicator = communicator
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.timeout = float(timeout)
        self.comm = None  # mpi4py's COMM_WORLD, when there is MPI
        if communicator != "auto" or launched_world_size() > 1:
            self.comm = _mpi_world()
        self.rank = 0 if self.comm is None else self.comm.Get_rank()
        self.world_size = 1 if self.comm is None else self.comm.Get_size()
        if self.world_size > 1:
            _abort_on_uncaught_exception(self.comm)
        self.collectives = LocalCollectives()
        self.reducer = None

    def __repr__(self):
        kind = self.collectives.name if self.reducer is not None else self.communicator
        return (f"DataParallel(communicator={kind!r}, rank={self.rank}, "
                f"world_size={self.world_size})")

    @property
    def parallel(self):
        """Whether there is more than one rank (a world of one trains as without it)."""
        return self.world_size > 1

    # ------------------------------------------------------------------- attach
    def attach(self, model):
        """Bind to a built, compiled model: choose the collectives for its backend, make
        rank 0's seed and weights every rank's, and lay out the gradient buckets."""
        self.collectives = self._collectives_for(model.backend)
        self.reducer = GradientReducer(model, self.collectives, self.bucket_bytes)
        self.averages_state = any(isinstance(layer, BatchNormalization)
                                  for layer in model.layers)
        if not self.parallel:
            return
        seed = int(self._broadcast_host(numpy.array([model.seed], numpy.uint64))[0])
        if seed != model.seed:
            model.seed = seed
            model.seed_dropout()
        self.collectives.broadcast(model.flat_params)
        self.collectives.broadcast(model.weights.state)
        model.refresh_compute_weights()

    def _broadcast_host(self, array):
        """Rank 0's values of a host array on every rank, waiting at most ``timeout``."""
        from mpi4py import MPI

        request = self.comm.Ibcast(array, root=0)
        deadline = time.monotonic() + self.timeout
        while not MPI.Request.Test(request):
            if time.monotonic() > deadline:
                raise TimeoutError(f"data-parallel: rank {self.rank} waited {self.timeout:g} "
                                   f"s for rank 0's seed (did every rank compile the model?)")
            time.sleep(0)
        return array

    def _collectives_for(self, backend):
        kind = self.communicator
        on_gpu = getattr(backend, "device_id", None) is not None
        if kind == "auto":
            if not self.parallel:
                return LocalCollectives()
            kind = "nccl" if on_gpu and self._own_gpus(backend) else "mpi"
        if kind == "nccl":
            if not on_gpu:
                raise ValueError(f"DataParallel: communicator: 'nccl' needs the cupy "
                                 f"backend; the model is on {backend.name!r}")
            if not self._own_gpus(backend):
                raise ValueError("DataParallel: communicator: 'nccl' needs a GPU per rank; "
                                 "ranks share one (use 'mpi' or 'auto')")
            return NcclCollectives(self.comm, backend)
        return MpiCollectives(self.comm, backend, self.timeout)

    def _own_gpus(self, backend):
        places = self.comm.allgather((socket.gethostname(), backend.device_id))
        return len(set(places)) == len(places)

    # ------------------------------------------------------------ the step's parts
    def rank_order(self, order, batch_size):
        """This rank's rows of an epoch's order (host int64): its share of every global
        batch, in step order. Returns ``(rows, steps, last)``: the rows, the number of
        global steps, and ``(start, stop, global rows)`` of the last, short global
        batch (or None when every batch is full)."""
        n, world, rank = order.shape[0], self.world_size, self.rank
        step_rows = batch_size * world
        full, remainder = divmod(n, step_rows)
        mine = [order[:full * step_rows].reshape(full, world, batch_size)[:, rank].ravel()]
        last = None
        if remainder:
            start, stop = split_rows(remainder, world, rank)
            mine.append(order[full * step_rows + start:full * step_rows + stop])
            last = (start, stop, remainder)
        return numpy.concatenate(mine), full + (remainder > 0), last

    def average_state(self, model):
        """Average the moving statistics across ranks (after a training step)."""
        if self.averages_state:
            state = model.weights.state
            self.collectives.allreduce(state)
            model.backend.multiply(state, 1.0 / self.world_size, out=state)

    def reduce_totals(self, buffer):
        """Sum an epoch's device totals (loss times rows, metric counts) across ranks."""
        if self.parallel:
            self.collectives.allreduce(buffer)
        return buffer

    def barrier(self):
        self.collectives.barrier()


class GradientReducer:
    """The flat gradient buffer in buckets of whole layers, the last layer first (the
    order the backward pass finishes them). ``layer_done(i)`` starts the allreduce of
    a bucket once its first layer is done; ``finish()`` waits for all of them."""

    def __init__(self, model, collectives, bucket_bytes):
        self.collectives = collectives
        grads = model.flat_grads
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
                self.buckets[opener] = grads[start:stop]
                start = stop = None
        if stop is not None:
            self.buckets[opener] = grads[start:stop]
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
