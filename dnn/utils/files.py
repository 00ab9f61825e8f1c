"""Output files: checked before long work starts, written atomically.

``check_output_path`` runs before training (the CLI's ``--save``/``--plot``/
``--boundary``, ModelCheckpoint, ``export``), so a bad path fails in a second rather than
after the run. ``atomic_write`` writes a temporary file beside the target, fsyncs it
and moves it into place, so a crash mid-write leaves the previous file intact; errors
name the user's path, never the temporary file, and the file gets the usual mode
(0666 less the umask), not mkstemp's 0600.
"""
from __future__ import annotations

import os
import tempfile


class OutputPathError(ValueError):
    """An output path that cannot be written."""


def _umask():
    """The process's umask. Linux reports it in /proc; elsewhere reading it means
    setting it for a moment, which races with other threads creating files."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_path(path, what="path"):
    """Raise OutputPathError (naming ``what`` and ``path``) unless a file can be
    written at ``path``: its directory exists and is writable, and it is not a
    directory. Returns the path as a string."""
    path = os.fspath(path)
    if not path:
        raise OutputPathError(f"{what}: expected a file path; got an empty string")
    if os.path.isdir(path):
        raise OutputPathError(f"{what}: expected a file path; got a directory: {path!r}")
    check_output_directory(path, what)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what}: {path!r} exists and is not writable")
    return path


def check_output_directory(path, what="path"):
    """Raise OutputPathError unless the directory that ``path`` names a file in exists
    and is writable."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputPathError(f"{what}: the directory {directory!r} of {path!r} does not "
                              f"exist; create it first")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what}: cannot write to the directory {directory!r} of "
                              f"{path!r} (permission denied)")


def atomic_write(path, write, what="path"):
    """Call ``write(fileobj)`` on a temp file beside ``path``, then move it into place."""
    path = check_output_path(path, what)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=directory)
    except OSError as exc:
        raise OutputPathError(f"{what}: cannot write {path!r}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:  # closes the descriptor whatever happens next
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and getattr(exc, "filename", None) == tmp:
            raise OutputPathError(f"{what}: cannot write {path!r}: {exc.strerror}") from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
