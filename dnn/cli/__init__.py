"""The ``dnn`` command: its parser (``parser``), the commands (``commands``), the data
they read (``data_sources``), what they infer from it (``task``) and print (``header``).

With no arguments, ``dnn train`` runs the circles example: a 2-4-6-6-4-1 ReLU network
trained with Adam and binary cross-entropy on two concentric circles. Bare ``dnn``
prints help.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from .. import backends
from ..distributed import ABORT_GRACE_S
from ..saving import ModelFileError
from ..training.nan_guard import NonFiniteLossError
from ..utils.environment import launched_rank, launched_world_size
from ..utils.files import OutputPathError
from .commands import COMMANDS, Session
from .errors import UsageError, with_flags
from .parser import build_parser
from .task import default_layers, infer_task

__all__ = ["UsageError", "build_parser", "default_layers", "infer_task", "main"]


def _report(command, message, code, session):
    """Print a command's error. Under mpiexec, rank 0 prints what every rank hits alike
    (before training: usage, data); once training runs, every rank prints its own and
    the run is aborted, so that no rank waits for one that has stopped."""
    strategy = session.strategy
    rank = launched_rank() if launched_world_size() > 1 else 0
    if rank == 0 or strategy is not None:
        where = f" (rank {rank})" if rank else ""
        print(f"dnn {command}{where}: {message}", file=sys.stderr)
    if strategy is not None and strategy.world_size > 1:
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_S)  # let the launcher forward the line first
        strategy.comm.Abort(code)
    return code


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    session = Session()
    if launched_world_size() > 1 and launched_rank() != 0:
        # Under mpiexec every rank runs this command; rank 0 alone prints its output.
        session.is_chief = False
        sys.stdout = open(os.devnull, "w")
    parser = build_parser()
    if argv and argv[0] == "bench":  # everything after 'bench' belongs to the benchmark
        args = argparse.Namespace(command="bench", args=argv[1:])
    else:
        args = parser.parse_args(argv)
        if args.command is None:  # bare dnn: say what there is rather than start a run
            parser.print_help()
            return 0
    try:
        return COMMANDS[args.command](args, session)
    except (UsageError, ValueError, TypeError, FileNotFoundError, ImportError, MemoryError,
            ModelFileError, OutputPathError, backends.BackendUnavailable) as exc:
        if os.environ.get("DNN_DEBUG"):
            raise
        message = str(exc) if isinstance(exc, UsageError) else \
            with_flags(args.command, str(exc))  # the library names arguments, not flags
        return _report(args.command, f"error: {message}", 2, session)
    except NonFiniteLossError as exc:  # training diverged: not a usage error
        return _report(args.command, str(exc), 1, session)
    except KeyboardInterrupt:
        print(f"dnn {args.command}: interrupted", file=sys.stderr)
        return 130
