"""Data-parallel training across processes (MPI) and GPUs (NCCL), the way ChainerMN
and Horovod do it: the model is replicated on every rank, each rank trains on its
share of every batch, and the gradients are summed across ranks before each update.

    strategy = dnn.distributed.DataParallel()          # "auto", "mpi" or "nccl"
    model.compile(loss=..., optimizer=..., distribute=strategy)
    model.fit(x, y, batch_size=64)                     # 64 rows per rank

    $ mpiexec -n 4 python train.py

Semantics, chosen so that N ranks train exactly as one rank would on N times the batch:

- every rank passes the same ``x`` and ``y`` and the same fit arguments (checked at
  the start of ``fit``: a mismatch is a ValueError on every rank); ``batch_size`` is
  per rank. The epoch's order comes from ``(seed, epoch)`` as always; each global
  batch of ``batch_size x N`` rows is split by rank (the last, short one as evenly as
  it goes, and always run eagerly, never from a graph captured for full batches);
- weights start identical: rank 0's seed and weights are broadcast when the strategy
  is attached (at compile, or ``load_model(path, distribute=)``);
- each rank scales its loss gradient by its share of the global batch and the sums
  are taken with allreduce over the flat gradient buffer, in buckets of whole layers.
  On host arrays a bucket's non-blocking MPI allreduce starts as soon as the backward
  pass has finished its layers; NCCL runs on the compute stream after them, and MPI
  staged from a GPU copies each bucket out as it is ready. Weight penalties' gradients
  are added on rank 0 only. Dropout draws, on each rank, its rows of the mask one rank
  would draw for the global batch;
- one more allreduce per step carries the global loss, so the NaN guard stops every
  rank at the same step; ``stop_training`` (a callback's, or Ctrl-C's) is agreed at
  each progress point, so every rank stops at the same step; BatchNormalization's
  moving statistics are averaged across ranks after every step (its batch statistics
  are each rank's own, as with PyTorch's DDP without SyncBatchNorm);
- epoch losses and metrics are summed across ranks, so every rank (and EarlyStopping
  on every rank) sees the same epoch logs (batch logs are rank 0's own rows);
  validation and ``evaluate`` split their rows across ranks, so call ``evaluate`` on
  every rank; ``predict`` runs whole on each rank;
- progress output is rank 0's alone; ``model.save`` writes on rank 0 and returns on
  every rank once the file is there, or raises on every rank if rank 0 could not
  write it (call it on every rank, as ModelCheckpoint does);
- an uncaught exception on any rank prints its traceback and aborts every rank (MPI
  Abort); MPI waits time out (``timeout`` seconds) rather than hang (NCCL operations
  have no timeout).

On GPUs each rank should use its own: ``dnn.use_backend(f"cupy:{local_rank()}")``.
"auto" launched without mpiexec is a world of one, and training is unchanged.
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
import time
import warnings

import numpy

from .backends.collectives import (LocalCollectives, MpiCollectives, NcclCollectives,
                                   wait_all)
from .layers import BatchNormalization

COMMUNICATORS = ("auto", "mpi", "nccl")
ABORT_GRACE_S = 0.5  # how long an aborting rank lets its last output drain
# Thread counts a user may have set; then the ranks' share of the cores is theirs.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS", "BLIS_NUM_THREADS")
# What MPI launchers put in each rank's environment: MPICH's Hydra, Open MPI, PMIx.
_WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
# The rank within its node (for choosing a GPU): Hydra, Open MPI, Slurm.
_LOCAL_RANK_VARS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")

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


def local_rank():
    """This process's rank among the ranks on its machine (0 if not launched): use GPU
    ``local_rank() % gpus`` so that ranks on one node take different GPUs."""
    return _launcher_value(_LOCAL_RANK_VARS, 0)


def find_mpiexec():
    """The mpiexec beside this Python (a venv with the mpich wheel), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


def split_rows(count, world, rank):
    """``(start, stop)`` of rank ``rank``'s share of ``count`` rows: contiguous shares,
    the first ``count % world`` ranks one row longer."""
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def rank_order(order, batch_size, world, rank):
    """Rank ``rank``'s rows of an epoch's order (host int64): its share of every global
    batch of ``batch_size x world`` rows, in step order. Returns ``(rows, steps,
    last)``: the rows, the number of global steps, and ``(start, stop, global rows)``
    of the last, short global batch (or None when every batch is full)."""
    n = order.shape[0]
    step_rows = batch_size * world
    full, remainder = divmod(n, step_rows)
    mine = [order[:full * step_rows].reshape(full, world, batch_size)[:, rank].ravel()]
    last = None
    if remainder:
        start, stop = split_rows(remainder, world, rank)
        mine.append(order[full * step_rows + start:full * step_rows + stop])
        last = (start, stop, remainder)
    return numpy.concatenate(mine), full + (remainder > 0), last


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
        # The launcher forwards a rank's output through a pipe; an abort at once can
        # kill the rank before its message is read (1 run in 8 lost it).
        time.sleep(ABORT_GRACE_S)
        comm.Abort(1)

    sys.excepthook = hook


class DataParallel:
    """``DataParallel(communicator="auto", bucket_mb=4.0, timeout=300.0)``: see the
    module docstring. ``communicator``: "mpi", "nccl", or "auto" (NCCL when the model
    is on the cupy backend and every rank has a GPU of its own, MPI otherwise).
    ``bucket_mb``: the gradient bytes per allreduce (whole layers, the last first).
    ``timeout``: seconds an MPI wait may take before it raises TimeoutError.

    "auto" launched without mpiexec is a world of one that trains exactly as without a
    strategy; "mpi" or "nccl" named explicitly always take the data-parallel path, a
    world of one included (where every sum is the value itself)."""

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
        self._collectives = {}  # id(backend) -> its collectives (shared by the models)
        self._own_gpus_answer = None
        self._cores_shared = False

    def __repr__(self):
        return (f"DataParallel(communicator={self.communicator!r}, rank={self.rank}, "
                f"world_size={self.world_size})")

    @property
    def parallel(self):
        """Whether training takes the data-parallel path (see the class docstring)."""
        return self.world_size > 1 or self.communicator != "auto"

    # ------------------------------------------------------------------- attach
    def attach(self, model):
        """Bind a built, compiled model: its ``Replica`` (the model keeps it). Rank 0's
        seed and weights become every rank's."""
        collectives = self.collectives_for(model.backend)
        replica = Replica(self, model, collectives)
        self._share_cores(model.backend)
        if self.parallel:
            seed = int(self._broadcast_host(numpy.array([model.seed], numpy.uint64))[0])
            if seed != model.seed:
                model.seed = seed
                model.seed_dropout()
            collectives.broadcast(model.flat_params)
            collectives.broadcast(model.weights.state)
            model.refresh_compute_weights()
        return replica

    def collectives_for(self, backend):
        """The collectives for ``backend``'s arrays (made once per backend)."""
        found = self._collectives.get(id(backend))
        if found is None:
            found = self._collectives[id(backend)] = self._make_collectives(backend)
        return found

    def _make_collectives(self, backend):
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
                                 "ranks share one (use 'mpi' or 'auto', or give each rank "
                                 "its GPU: dnn.use_backend(f'cupy:{local_rank()}'))")
            return NcclCollectives(self.comm, backend, self.timeout)
        return MpiCollectives(self.comm, backend, self.timeout)

    def _share_cores(self, backend):
        """Ranks on one machine split its cores: each rank's BLAS, numba and own thread
        pools get cores / ranks-on-this-machine threads, unless the user chose a count
        (OMP_NUM_THREADS and the like). Two ranks of two BLAS threads each on two cores
        trained digits 4-20x slower than one process."""
        if self._cores_shared or self.world_size == 1:
            return
        self._cores_shared = True
        if any(name in os.environ for name in _THREAD_VARS):
            return
        from mpi4py import MPI

        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
        threads = max(1, (os.cpu_count() or 1) // local)
        limited = backend.limit_threads(threads)
        if limited and "BLAS" not in limited and self.rank == 0:
            warnings.warn(f"DataParallel: {local} ranks share this machine's "
                          f"{os.cpu_count()} cores, but the BLAS thread pool cannot be "
                          f"limited without threadpoolctl (pip install threadpoolctl, or "
                          f"pip install '.[mpi]' in the dnn checkout); or set "
                          f"OMP_NUM_THREADS={threads}", RuntimeWarning, stacklevel=3)

    def _own_gpus(self, backend):
        """Whether every rank's GPU is a different device. Compared by PCI bus id, not
        index: with a per-rank CUDA_VISIBLE_DEVICES every rank's GPU is index 0."""
        if self._own_gpus_answer is None:
            bus = backend.describe()["pci_bus_id"]
            places = self.comm.allgather((socket.gethostname(), bus))
            self._own_gpus_answer = len(set(places)) == len(places)
        return self._own_gpus_answer

    # -------------------------------------------------------------- agreement
    def _broadcast_host(self, array):
        """Rank 0's values of a host array on every rank, waiting at most ``timeout``."""
        wait_all([self.comm.Ibcast(array, root=0)], self.timeout, "rank 0's values",
                 self.rank, self.world_size)
        return array

    def _gather_host(self, array):
        """Every rank's values of a host array, as rows, waiting at most ``timeout``."""
        out = numpy.empty((self.world_size,) + array.shape, array.dtype)
        wait_all([self.comm.Iallgather(array, out)], self.timeout, "every rank's values",
                 self.rank, self.world_size)
        return out

    def check_same(self, what, **values):
        """Raise ValueError, on every rank alike, unless every rank passed the same
        integer ``values`` (fit's arguments and data sizes): ranks that disagree would
        pair unrelated collectives or wait for ever."""
        if self.comm is None:
            return
        names = list(values)
        mine = numpy.array([int(values[n]) for n in names], numpy.int64)
        table = self._gather_host(mine)
        for j, name in enumerate(names):
            column = table[:, j]
            if (column != column[0]).any():
                raise ValueError(f"{what}: {name}: expected the same value on every rank "
                                 f"(every rank passes the same data and arguments); got "
                                 f"{', '.join(f'rank {r}: {v}' for r, v in enumerate(column))}")

    def any_rank(self, flag):
        """Whether ``flag`` is true on any rank (the same answer on every rank)."""
        if self.comm is None:
            return bool(flag)
        return bool(self._gather_host(numpy.array([int(bool(flag))], numpy.int64)).any())


class Replica:
    """One model's part in data-parallel training: its gradient buckets, which of its
    non-trainable weights are averaged across ranks, and its epoch order per rank."""

    def __init__(self, strategy, model, collectives):
        self.strategy = strategy
        self.model = model
        self.collectives = collectives
        self.rank, self.world_size = strategy.rank, strategy.world_size
        self.parallel = strategy.parallel
        self.reducer = GradientReducer(model, collectives, strategy.bucket_bytes)
        # BatchNormalization's moving statistics drift apart across ranks (each sees
        # its own batch); other non-trainable weights (Normalization's) never change.
        self.moving = [view for layer, name, view in model.weights.views
                       if isinstance(layer, BatchNormalization) and name.startswith("moving_")]

    def rank_order(self, order, batch_size):
        """This rank's rows of an epoch's order: see ``rank_order``."""
        return rank_order(order, batch_size, self.world_size, self.rank)

    def average_state(self):
        """Average BatchNormalization's moving statistics across ranks (after a step)."""
        be = self.model.backend
        for view in self.moving:
            self.collectives.allreduce(view)
            be.multiply(view, 1.0 / self.world_size, out=view)

    def reduce_totals(self, buffer):
        """Sum an epoch's device totals (loss times rows, metric counts) across ranks."""
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
