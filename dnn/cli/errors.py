"""The command line's own error: a user error reported as one line, exit status 2."""
from __future__ import annotations


class UsageError(Exception):
    """A user error reported as one line, exit status 2."""
