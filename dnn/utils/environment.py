"""What the process's environment says: the thread counts a user chose, and the ranks an
MPI launcher started (read by the data-parallel strategy and the command line)."""
from __future__ import annotations

import os
import shutil
import sys

# Thread counts a user may set; where one is set, the choice of threads is theirs.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "BLIS_NUM_THREADS")
# What MPI launchers put in each rank's environment: MPICH's Hydra, Open MPI, PMIx.
_WORLD_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
# The rank within its node (for choosing a GPU): Hydra, Open MPI, Slurm.
_LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")


def thread_settings():
    """``{variable: value}`` of the thread counts set in the environment."""
    return {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ}


def _launcher_value(names, default):
    """The first of the environment variables ``names`` that holds a number."""
    for name in names:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return default


def launched_world_size():
    """The number of ranks an MPI launcher started, from the environment (1 if none)."""
    return _launcher_value(_WORLD_SIZE_VARIABLES, 1)


def launched_rank():
    """This process's rank as an MPI launcher set it in the environment (0 if none)."""
    return _launcher_value(_RANK_VARIABLES, 0)


def local_rank():
    """This process's rank among the ranks on its machine (0 if not launched): use GPU
    ``local_rank() % gpus`` so that ranks on one node take different GPUs."""
    return _launcher_value(_LOCAL_RANK_VARIABLES, 0)


def find_mpiexec():
    """The mpiexec beside this Python (a venv with the mpich wheel), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")
