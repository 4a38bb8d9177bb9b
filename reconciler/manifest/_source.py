"""Where manifests and UUID files are read from: the file system here, a git revision in _git.py.

The loader only sees opaque *keys* (one per file) and asks its source to list, read,
resolve and display them, so the same validation runs on a work tree and on a commit.
A source also owns the boundary rule: a manifest, and a UUID file named by a manifest, must
stay inside the release repository, so a pull request cannot make the reconciler read (and
quote into annotations) arbitrary files with a symbolic link such as ``p.yaml -> /etc/passwd``.
"""

from __future__ import annotations

import codecs
import os
import stat
from typing import Protocol

from reconciler.errors import Problem, UserError
from reconciler.manifestfiles import walk

# Far above any real manifest or 10,000-UUID list (370 KB); checked before the file is read, and
# the read itself stops one byte past it, so a file that grows meanwhile cannot exhaust memory.
MAX_FILE_BYTES = 16 * 1024 * 1024


class SourceError(UserError):
    """A path that cannot be listed, resolved or read; the message is the reason, e.g. 'no such file or directory'."""


class ManifestSource(Protocol):
    def manifests(self, path: str) -> list[str]:
        """Keys of the manifests at ``path``: the file itself, or every ``*.yaml``/``*.yml`` below the
        directory, recursively, sorted, skipping hidden files and directories (``.git``). An empty list
        when a directory holds none. Raises SourceError when ``path`` does not exist."""

    def read(self, key: str) -> bytes:
        """The file's bytes. Raises SourceError (missing, unreadable, a directory, over MAX_FILE_BYTES)."""

    def resolve(self, manifest: str, relative: str) -> str:
        """The key of ``relative`` (a path written in the manifest) next to the manifest ``manifest``.
        Raises SourceError when it leaves the release repository."""

    def display(self, key: str) -> str:
        """How messages name the file: the path as the user would type it from the current directory."""

    def exists(self, key: str) -> bool:
        """Whether a file (or a symbolic link, which ``read`` then judges) is at ``key``."""

    def repository(self, manifest: str) -> str:
        """The release repository ``resolve`` keeps the manifest's paths in: manifests of one directory
        and one repository see the same files around them."""


class FileSource:
    """Manifests in the file system. Keys are paths as the user gave them, normalized, and
    relative when they lie below the current directory (so each file has one key).

    The release repository of a path is the git work tree containing it; outside git, the
    directory given (or a given file's directory). A manifest whose real path leaves it (a
    symbolic link) is refused when read, like a UUID file.
    """

    def __init__(self) -> None:
        self._roots: dict[str, str] = {}  # manifest key -> real path of its release repository
        self._real_dirs: dict[str, str] = {}  # directory -> its real path (read and resolve ask once per file)
        self._cwd = os.getcwd() + os.sep

    def manifests(self, path: str) -> list[str]:
        path = self.display(os.path.normpath(path))  # one key per file however it is named
        if os.path.isdir(path):
            root = _git_top(path) or os.path.realpath(path)
            if not _inside(os.path.realpath(path), root):
                raise SourceError("a symbolic link that leaves the release repository")
            keys = sorted(walk(path))
        elif os.path.isfile(path):
            parent = os.path.dirname(path) or "."
            root = _git_top(parent) or os.path.realpath(parent)
            keys = [path]
        elif os.path.lexists(path):
            raise SourceError("not a regular file or directory")
        else:
            raise SourceError("no such file or directory")
        for key in keys:
            self._roots[key] = root
        return keys

    def read(self, key: str) -> bytes:
        root = self._roots.get(key)  # set for manifests; UUID files were checked by resolve
        if root is not None and not _inside(self._realpath(key), root):
            # Neither the target's path nor its content is shown: it is not the repository's to show.
            raise SourceError("a symbolic link that leaves the release repository; a manifest must be a file in it")
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; the checks below then refuse it.
            descriptor = os.open(key, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except FileNotFoundError:
            raise SourceError("no such file or directory") from None
        except PermissionError:
            raise SourceError("permission denied") from None
        except OSError as error:
            raise SourceError((error.strerror or str(error)).lower()) from None
        try:
            return _read_regular_file(descriptor)
        finally:
            os.close(descriptor)

    def resolve(self, manifest: str, relative: str) -> str:
        key = os.path.normpath(os.path.join(os.path.dirname(manifest), relative))
        root = self.repository(manifest)
        if not _inside(self._realpath(key), root):
            raise SourceError(f"outside the release repository {root}")
        return key

    def repository(self, manifest: str) -> str:
        root = self._roots.get(manifest)
        if root is None:
            parent = os.path.dirname(manifest) or "."
            root = _git_top(parent) or os.path.realpath(parent)
        return root

    def display(self, key: str) -> str:
        """Relative to the current directory when the key is an absolute path below it, else as given."""
        return key.removeprefix(self._cwd)

    def exists(self, key: str) -> bool:
        return os.path.lexists(key) and not os.path.isdir(key)

    def _realpath(self, path: str) -> str:
        if os.path.islink(path) or os.path.basename(path) in (os.curdir, os.pardir):  # ".." is no name to join
            return os.path.realpath(path)
        directory, name = os.path.split(path)
        if directory not in self._real_dirs:
            self._real_dirs[directory] = os.path.realpath(directory or ".")
        return os.path.join(self._real_dirs[directory], name)


def _read_regular_file(descriptor: int) -> bytes:
    """The bytes of an open regular file of at most MAX_FILE_BYTES, checked on what was opened (not on
    what the path names by now); the read stops one byte past the limit."""
    status = os.fstat(descriptor)
    if stat.S_ISDIR(status.st_mode):
        raise SourceError("is a directory")
    if not stat.S_ISREG(status.st_mode):  # a FIFO or a device would block or never end
        raise SourceError("not a regular file")
    too_large = SourceError(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    if status.st_size > MAX_FILE_BYTES:
        raise too_large
    # Reads as large as the file says it is, and one byte more to see it end (at least 64 KiB, for a file
    # system that says 0): os.read allocates all it is asked for before it reads, and asking for the whole
    # cap (16 MiB) made every read of a small file map and unmap that much (1,000 manifests and their UUID
    # files: 111 -> 58 ms).
    step = max(status.st_size + 1, 64 * 1024)
    chunks, size = [], 0
    try:
        while size <= MAX_FILE_BYTES and (chunk := os.read(descriptor, min(step, MAX_FILE_BYTES + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        raise SourceError((error.strerror or str(error)).lower()) from None
    if size > MAX_FILE_BYTES:
        raise too_large
    return b"".join(chunks)


def decode_utf8(data: bytes, file: str) -> str | Problem:
    """A file's text, or a Problem at the first byte that is not UTF-8. A leading BOM is dropped."""
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        col = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        return Problem(file, line, col, f"not UTF-8 text (byte 0x{data[error.start]:02x}); save the file as UTF-8")


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(os.path.join(root, ""))


def _git_top(directory: str) -> str | None:
    """The real path of the git work tree containing ``directory``, if any (a ``.git`` dir or file).

    Found by walking up the path as written, not its real path: ``releases -> /etc`` committed in
    a pull request is a directory of the repository that leads out of it, and must be refused as
    such rather than make ``/etc`` the release repository.
    """
    current = os.path.abspath(directory)
    while True:
        if os.path.exists(os.path.join(current, ".git")):
            return os.path.realpath(current)
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
