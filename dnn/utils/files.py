"""Output files: checked before long work starts, written atomically.

``check_output_path`` runs before training (the CLI's ``--save``/``--plot``/
``--boundary``/``--out``, ModelCheckpoint, ``export``), so a bad path fails in a second
rather than after the run: it checks the suffix and really creates and removes a file
in the directory (permission bits do not tell whether /proc or a read-only mount takes
one). ``atomic_write`` writes a temporary file beside the target, fsyncs it and moves
it into place, so a crash mid-write leaves the previous file intact; errors name the
user's path, never the temporary file, and the file gets the usual mode (0666 less the
umask), not mkstemp's 0600.

A process killed mid-write leaves its temporary behind. Temporaries are named
``.<name>.<host>-<pid>.<random>.tmp``, and each write first removes those of the same
target whose writer, on this host, is gone: a writer that is still running (another
process saving to the same path) keeps its file, and a host's temporaries are left to
that host (on a shared file system pids mean nothing elsewhere). A pid reused since
only keeps a stale file a while longer; it never costs a live writer its file.
"""
from __future__ import annotations

import os
import re
import socket
import tempfile

# What dnn writes a model to (model.save, ModelCheckpoint): its own .npz, or a Keras
# archive. The CLI's --save takes .npz alone (dnn.cli.commands.SAVE_SUFFIXES).
MODEL_SUFFIXES = (".npz", ".keras")


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


def check_suffix(path, suffixes, what="path", also=""):
    """Raise OutputPathError unless ``path`` ends in one of ``suffixes`` (any case).
    ``also``: words added to the message (other things the option takes)."""
    if os.fspath(path).lower().endswith(tuple(s.lower() for s in suffixes)):
        return
    names = list(suffixes)
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    raise OutputPathError(f"{what}: expected a file name ending in {listed}{also}; "
                          f"got {os.fspath(path)!r}")


def check_output_path(path, what="path", suffixes=None, probe=True):
    """Raise OutputPathError (naming ``what`` and ``path``) unless a file can be
    written at ``path``: it ends in one of ``suffixes`` (when given), its directory
    exists and takes a new file (with ``probe``, one is created and removed there), and
    it is not a directory. Returns the path as a string."""
    path = os.fspath(path)
    if not path:
        raise OutputPathError(f"{what}: expected a file path; got an empty string")
    if os.path.isdir(path):
        raise OutputPathError(f"{what}: expected a file path; got a directory: {path!r}")
    if suffixes:
        check_suffix(path, suffixes, what)
    check_output_directory(path, what, probe)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what}: {path!r} exists and is not writable")
    return path


def check_output_directory(path, what="path", probe=True):
    """Raise OutputPathError unless the directory that ``path`` names a file in exists
    and takes a new file: with ``probe``, a temporary file is created there and removed
    (``path``'s own name may be a template such as ModelCheckpoint's)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputPathError(f"{what}: the directory {directory!r} of {path!r} does not "
                              f"exist; create it first")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what}: cannot write to the directory {directory!r} of "
                              f"{path!r} (permission denied)")
    if probe:
        try:
            fd, tmp = _temporary(path)
        except OSError as exc:
            raise OutputPathError(f"{what}: cannot write {path!r}: the directory "
                                  f"{directory!r} takes no new file ({exc.strerror})") \
                from None
        os.close(fd)
        os.unlink(tmp)


def _host_tag():
    """This host's name as it appears in temporaries: letters, digits and dashes."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:40] or "host"


def _temporary(path):
    """``(fd, name)`` of a new temporary file beside ``path``, named for its writer."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}.{_host_tag()}-{os.getpid()}."
    return tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)


def _pid_is_running(pid):
    """Whether process ``pid`` runs on this host (a zombie, killed but not yet reaped
    by its parent, writes nothing more: it counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_temporaries(path):
    """The temporaries beside ``path`` left by writers of ``path`` on this host that
    are no longer running (see the module's docstring)."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    owner = re.compile(r"([A-Za-z0-9-]+)-([0-9]+)\.[^.]+\.tmp")
    host, stale = _host_tag(), []
    try:
        names = os.listdir(directory)
    except OSError:
        return stale
    for name in names:
        match = owner.fullmatch(name[len(prefix):]) if name.startswith(prefix) else None
        if match and match.group(1) == host and not _pid_is_running(int(match.group(2))):
            stale.append(os.path.join(directory, name))
    return stale


def remove_stale_temporaries(path):
    """Remove ``stale_temporaries(path)``; returns the paths removed. Another writer
    may remove the same files at the same moment: a file already gone is skipped."""
    removed = []
    for tmp in stale_temporaries(path):
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            continue
        except OSError:  # not ours to remove after all (permissions): leave it
            continue
        removed.append(tmp)
    return removed


def atomic_write(path, write, what="path"):
    """Call ``write(fileobj)`` on a temp file beside ``path``, then move it into place.
    Temporaries that killed writers left for ``path`` are removed first."""
    path = check_output_path(path, what, probe=False)
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(path)
    try:
        fd, tmp = _temporary(path)
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
    _sync_directory(directory)


def _sync_directory(directory):
    """Make a rename in ``directory`` durable."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
