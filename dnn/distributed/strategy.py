"""``DataParallel``: the strategy of data-parallel training (see ``dnn.distributed``):
the communicator, rank 0's weights broadcast at attach, and the agreements between
ranks (same arguments, any rank's stop)."""
from __future__ import annotations

import os
import socket
import sys
import time
import warnings

import numpy

from ..backends.collectives import (LocalCollectives, MpiCollectives, NcclCollectives,
                                    wait_all)
from ..training.replica import LOCAL, Strategy
from ..utils.environment import THREAD_VARIABLES, launched_world_size
from ..utils.validation import check_choice, check_positive_number
from .replica import DataParallelReplica

COMMUNICATORS = ("auto", "mpi", "nccl")
ABORT_GRACE_S = 0.5  # how long an aborting rank lets its last output drain
# What a mismatch message adds about shards: the way to give ranks different data.
_SHARDS = ", unless fit(shard=True) says each rank passes its own part"
_MISSING_MPI = ("DataParallel: MPI needs mpi4py and an MPI library: pip install mpi4py "
                "mpich (or pip install '.[mpi]' in the dnn checkout)")


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


class DataParallel(Strategy):
    """``DataParallel(communicator="auto", bucket_mb=4.0, timeout=300.0)``: see the
    module docstring. ``communicator``: "mpi", "nccl", or "auto" (NCCL when the model
    is on the cupy backend and every rank has a GPU of its own, MPI otherwise).
    ``bucket_mb``: the gradient bytes per allreduce (whole layers, the last first).
    ``timeout``: seconds an MPI wait may take before it raises TimeoutError.

    "auto" launched without mpiexec is a world of one that trains exactly as without a
    strategy; "mpi" or "nccl" named explicitly always take the data-parallel path, a
    world of one included (where every sum is the value itself)."""

    def __init__(self, communicator="auto", bucket_mb=4.0, timeout=300.0):
        self.communicator = check_choice(communicator, "DataParallel: communicator",
                                         COMMUNICATORS)
        self.bucket_bytes = int(check_positive_number(bucket_mb, "DataParallel: bucket_mb")
                                * 2**20)
        self.timeout = check_positive_number(timeout, "DataParallel: timeout")
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
        """Bind a built, compiled model: its replica (the model keeps it), a world of one
        unless training is data-parallel. Rank 0's seed and weights become every
        rank's."""
        collectives = self.collectives_for(model.backend)
        self._share_cores(model.backend)
        if not self.parallel:
            return LOCAL
        seed = int(self._broadcast_host(numpy.array([model.seed], numpy.uint64))[0])
        if seed != model.seed:
            model.seed = seed
            model.seed_dropout()
        collectives.broadcast(model.flat_params)
        collectives.broadcast(model.weights.state)
        model.weights.refresh_compute()
        return DataParallelReplica(self, model, collectives)

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
        if any(name in os.environ for name in THREAD_VARIABLES):
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
                data = any(word in name for word in ("rows of", "fingerprint of"))
                raise ValueError(f"{what}: {name}: expected the same value on every rank "
                                 f"(every rank passes the same data and arguments"
                                 f"{_SHARDS if data else ''}); got "
                                 f"{', '.join(f'rank {r}: {v}' for r, v in enumerate(column))}")

    def all_values(self, values):
        """Every rank's integer ``values``, one list per rank in rank order."""
        mine = numpy.array([int(v) for v in values], numpy.int64)
        if self.comm is None:
            return [mine.tolist()]
        return self._gather_host(mine).tolist()

    def any_rank(self, flag):
        """Whether ``flag`` is true on any rank (the same answer on every rank)."""
        if self.comm is None:
            return bool(flag)
        return bool(self._gather_host(numpy.array([int(bool(flag))], numpy.int64)).any())
