"""Files we write for a user (a saved plan, a status page): whole or not at all, and only as regular files.

A reader (a reviewer, a CI artifact upload, a browser) never sees half a file: the text goes to a
temporary file with a random name, created exclusively beside the target (a link planted at a predictable
name cannot redirect it), made durable, then renamed over the target. A target that exists and is not a
regular file (a symbolic link, a FIFO, a directory, a device) is refused rather than followed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile

from reconciler.errors import UserError


def write_atomically(path: str, text: str, what: str) -> None:
    """``text`` in ``path``, as above; any failure is one ``UserError`` naming ``what`` was written."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise UserError(f"cannot write {what} to {path}: {exc.strerror}") from exc
    if mode is not None and not stat.S_ISREG(mode):
        raise UserError(f"cannot write {what} to {path}: it is {kind(mode)}; give a regular file, or - for stdout")
    directory, name = os.path.split(path)
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    except OSError as exc:
        raise UserError(f"cannot write {what} to {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o666 & ~_umask())  # as open() would have made it: mkstemp's is 0600
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_directory(directory or ".")
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise UserError(f"cannot write {what} to {path}: {exc.strerror}") from exc


def kind(mode: int) -> str:
    """What a file that is not a regular one is, for a message."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _umask() -> int:
    """The process's umask (reading it means setting it; nothing else runs between the two calls)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: str) -> None:
    """The rename itself survives a crash only once the directory is on disk."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
