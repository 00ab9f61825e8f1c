"""The command line's own error (a user error reported as one line, exit status 2), and
the library's messages said with the flags the user typed."""
from __future__ import annotations

import re


class UsageError(Exception):
    """A user error reported as one line, exit status 2."""


# The Python arguments behind each command's flags: the library names the argument
# ("Adam: learning_rate: expected ..."), the user typed the flag ("--lr").
FLAGS = {
    "train": {"test_size": "--test-split", "validation_split": "--val-split",
              "learning_rate": "--lr", "batch_size": "--batch-size", "epochs": "--epochs",
              "seed": "--seed", "dtype": "--dtype", "activation": "--activation",
              "optimizer": "--optimizer", "loss": "--loss", "backend": "--backend",
              "encoding": "--encoding", "delimiter": "--delimiter", "target": "--target"},
    "evaluate": {"backend": "--backend", "encoding": "--encoding",
                 "delimiter": "--delimiter", "target": "--target"},
}
FLAGS["predict"] = FLAGS["evaluate"]
FLAGS["export"] = {"backend": "--backend"}

# One "name: " at the start of a message: an owner ("Adam", "load_csv") or an argument.
_SEGMENT = re.compile(r"([A-Za-z_][\w.]*): ")


def with_flags(command, message):
    """``message`` with its leading "owner: argument: " said as the flag of
    ``command`` that sets that argument ("Adam: learning_rate: ..." -> "--lr: ..."),
    when there is one; otherwise unchanged."""
    flags = FLAGS.get(command, {})
    rest = message
    while (match := _SEGMENT.match(rest)) is not None:
        if match.group(1) in flags:
            return f"{flags[match.group(1)]}: {rest[match.end():]}"
        rest = rest[match.end():]
    return message
