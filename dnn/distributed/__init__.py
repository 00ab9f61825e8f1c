"""Data-parallel training across processes (MPI) and GPUs (NCCL): the strategy
(``strategy``) and each model's replica on a rank (``replica``).

As ChainerMN and Horovod do it, the model is replicated on every rank, each rank trains
on its share of every batch, and the gradients are summed across ranks before each
update.

    strategy = dnn.distributed.DataParallel()          # "auto", "mpi" or "nccl"
    model.compile(loss=..., optimizer=..., distribute=strategy)
    model.fit(x, y, batch_size=64)                     # 64 rows per rank

    $ mpiexec -n 4 python train.py

Semantics, chosen so that N ranks train exactly as one rank would on N times the batch:

- every rank passes the same ``x`` and ``y`` and the same fit arguments (checked at
  the start of ``fit``: the arguments, the rows, and a fingerprint of the data, each
  array's sum and a strided sample of its rows; a mismatch is a ValueError on every
  rank); ``batch_size`` is per rank (the command line's ``--batch-size`` is the
  global batch, split across the ranks). The epoch's order comes from ``(seed,
  epoch)`` as always; each global batch of ``batch_size x N`` rows is split by rank
  (the last, short one as evenly as it goes, and always run eagerly, never from a
  graph captured for full batches). A batch source read by every rank is split the
  same way, batch by batch, each batch checked to be the same on every rank;
- or, with ``fit(..., shard=True)``, each rank passes its own part of the data (an
  array, or a batch source such as a DataLoader with a DistributedSampler): a global
  batch is every rank's batch of that step, in rank order, each rank's loss gradient
  scaled by its share of the rows. Ranks must then have the same number of steps per
  epoch: checked at the start where it is known, and at every step for a source of
  unknown length, where a rank whose data ends early is an error on every rank (no
  rank waits for ever). Validation and ``evaluate`` add up the ranks' own rows;
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

from ..training.epoch_plan import rank_order, split_rows
from ..utils.environment import find_mpiexec, launched_rank, launched_world_size, local_rank
from .replica import DataParallelReplica, GradientReducer
from .strategy import ABORT_GRACE_S, COMMUNICATORS, DataParallel

__all__ = ["ABORT_GRACE_S", "COMMUNICATORS", "DataParallel", "DataParallelReplica",
           "GradientReducer", "find_mpiexec", "launched_rank", "launched_world_size",
           "local_rank", "rank_order", "split_rows"]
