"""Collective operations over a backend's arrays, for data-parallel training: MPI (through
mpi4py) between processes and machines, NCCL (through ``cupy.cuda.nccl``) between GPUs.

Every class has one interface: ``start_allreduce(buf)`` begins an in-place sum across
ranks and returns a handle, ``wait(handles)`` completes them, ``allreduce(buf)`` does
both, ``broadcast(buf)`` copies rank 0's array everywhere, and ``barrier()``.

- ``LocalCollectives``: a world of one; every operation leaves the arrays as they are.
- ``MpiCollectives``: host arrays go to MPI as they are (``Iallreduce`` in place, so a
  bucket of gradients is summed while the backward pass goes on; ``progress()`` lets
  MPI move it along between layers). Device arrays are staged through pinned host
  memory, for ranks that share a GPU. Waits poll with a timeout: a rank that never
  arrives raises ``TimeoutError`` here instead of hanging every rank.
- ``NcclCollectives``: device arrays summed by NCCL on the current stream, in the
  stream's order (so "waiting" is the stream's business), which a CUDA graph can
  capture (NCCL >= 2.9). NCCL's own unique id, and barriers, go over MPI. NCCL
  operations themselves have no timeout.
"""
from __future__ import annotations

import time

import numpy


def wait_all(requests, timeout, what, rank, size):
    """Complete mpi4py requests, polling, or raise TimeoutError after ``timeout`` s: a
    rank that never arrives must not hang the others for ever."""
    from mpi4py import MPI

    deadline = time.monotonic() + timeout
    while not MPI.Request.Testall(requests):
        if time.monotonic() > deadline:
            raise TimeoutError(f"data-parallel: rank {rank} waited {timeout:g} s for {what} "
                               f"that not every rank of {size} joined (did one rank stop, "
                               f"or call fit, evaluate or save alone?)")
        time.sleep(0)  # yield the core to a rank sharing it


class LocalCollectives:
    """A world of one."""

    name = "local"
    capturable = True  # nothing to capture

    def __init__(self):
        self.rank, self.size = 0, 1

    def start_allreduce(self, buf):
        return None

    def wait(self, handles):
        pass

    def progress(self):
        pass

    def allreduce(self, buf):
        return buf

    def broadcast(self, buf):
        return buf

    def barrier(self):
        pass


class MpiCollectives:
    """Collectives over an mpi4py communicator for ``backend``'s arrays."""

    name = "mpi"
    capturable = False  # MPI calls run on the host: a CUDA graph cannot hold them

    def __init__(self, comm, backend, timeout=300.0):
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.backend = backend
        self.timeout = float(timeout)
        self._device = not isinstance(backend.empty((1,), "float32"), numpy.ndarray)
        # (device address, size, dtype) -> pinned host buffer (device arrays only): one
        # per bucket, so that buckets in flight at once never share one.
        self._staging = {}
        self._pending = []  # requests started and not yet completed

    def _host(self, buf):
        """A pinned host array shaped like the device array ``buf``, holding its values
        (the stream is synchronized by the copy)."""
        key = (buf.data.ptr, buf.size, buf.dtype.str)
        host = self._staging.get(key)
        if host is None:
            import cupyx

            host = self._staging[key] = cupyx.empty_pinned((buf.size,), buf.dtype)
        with self.backend.device_scope():  # CuPy copies on the current device's stream
            buf.ravel().get(out=host)
        return host

    def start_allreduce(self, buf):
        if buf.size == 0:
            return None
        host = self._host(buf) if self._device else buf
        request = self.comm.Iallreduce(self._mpi.IN_PLACE, host, op=self._mpi.SUM)
        self._pending.append(request)
        return request, buf, host

    def progress(self):
        """Let MPI advance the transfers in flight (it moves only inside MPI calls)."""
        if self._pending:
            self._mpi.Request.Testall(self._pending)

    def wait(self, handles, what="an allreduce"):
        handles = [h for h in handles if h is not None]
        requests = [h[0] for h in handles]
        wait_all(requests, self.timeout, what, self.rank, self.size)
        self._pending = [r for r in self._pending if all(r is not q for q in requests)]
        if self._device:
            with self.backend.device_scope():
                for _, buf, host in handles:
                    if buf is not None:
                        buf.ravel().set(host)

    def allreduce(self, buf):
        self.wait([self.start_allreduce(buf)])
        return buf

    def broadcast(self, buf):
        host = self._host(buf) if self._device else buf
        request = self.comm.Ibcast(host, root=0)
        self.wait([(request, buf, host)], "a broadcast")
        return buf

    def barrier(self):
        self.wait([(self.comm.Ibarrier(), None, None)], "a barrier")


class NcclCollectives:
    """Collectives over NCCL for CuPy arrays, one GPU per rank; ``comm`` (mpi4py) only
    carries NCCL's unique id."""

    name = "nccl"
    capturable = True

    def __init__(self, comm, backend, timeout=300.0):
        from cupy.cuda import nccl

        self._nccl = nccl
        self.mpi_comm, self.timeout = comm, float(timeout)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.backend = backend
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = comm.bcast(uid, root=0)
        # NCCL binds the device current at its creation; its operations go on that
        # device's current stream, the one the backend's kernels run on.
        self._device = backend.device_scope()
        with self._device:
            self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
                       "int64": nccl.NCCL_INT64, "int32": nccl.NCCL_INT32}

    def _type(self, buf):
        try:
            return self._types[buf.dtype.name]
        except KeyError:
            raise TypeError(f"NCCL: expected a float32, float64, int32 or int64 array; "
                            f"got {buf.dtype}") from None

    def _stream(self):
        """The current stream of the backend's device (call with that device current)."""
        import cupy

        return cupy.cuda.get_current_stream().ptr

    def start_allreduce(self, buf):
        if buf.size:
            with self._device:
                self.comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self._type(buf),
                                    self._nccl.NCCL_SUM, self._stream())
        return None

    def wait(self, handles):
        pass  # NCCL runs in the stream's order: what follows on the stream sees the sums

    def progress(self):
        pass

    def allreduce(self, buf):
        self.start_allreduce(buf)
        return buf

    def broadcast(self, buf):
        if buf.size:
            with self._device:
                self.comm.bcast(buf.data.ptr, buf.size, self._type(buf), 0, self._stream())
        return buf

    def barrier(self):
        # The device's work first (a save's weights were read), then every rank: NCCL
        # has no barrier of its own, MPI does.
        self.backend.synchronize()
        wait_all([self.mpi_comm.Ibarrier()], self.timeout, "a barrier", self.rank, self.size)
