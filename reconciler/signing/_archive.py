"""Offline key archives in fioctl's format (a tar.gz of ``*.pub``/``*.sec`` pairs), read in memory only.

Archives are untrusted input: sizes, member counts and member types are bounded before anything is
parsed, and errors never quote the secrets they were reading.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import os
import re
import stat
import zlib
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from reconciler.signing._canonical import Json
from reconciler.signing._errors import TufError
from reconciler.signing._keys import KeyPair

if TYPE_CHECKING:
    import tarfile

# Limits for key archives. Real ones hold a handful of keys of a few KiB each.
MAX_ARCHIVE_BYTES = 1 << 20
MAX_ARCHIVE_UNPACKED = 4 << 20
MAX_ARCHIVE_MEMBER = 64 << 10
MAX_ARCHIVE_MEMBERS = 256


def key_archive_bytes(pairs: Sequence[KeyPair], role: str = "targets") -> bytes:
    """A fioctl-format tgz: ``tufrepo/keys/fioctl-<role>-<keyid>.pub|.sec``, gzip mtime 0."""
    import tarfile  # here, not at the top: every run imports signing, few read or write an archive (27 ms)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for pair in pairs:
            for suffix, doc in ((".pub", pair.public), (".sec", pair.private)):
                data = json.dumps(doc, separators=(",", ":")).encode()
                info = tarfile.TarInfo(f"tufrepo/keys/fioctl-{role}-{pair.keyid}{suffix}")
                info.size = len(data)
                info.mode = 0o600
                tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


class KeyArchive:
    """A key archive held in memory (entry name -> bytes). It is never extracted to disk and its
    repr shows only how many entries it has. ``source`` names it in messages (``key archive PATH``,
    or the environment variable that carried it), so an error says which archive it is about."""

    def __init__(self, entries: dict[str, bytes], source: str = "key archive"):
        self._entries = entries
        self.source = source

    def __repr__(self) -> str:
        return f"KeyArchive({len(self._entries)} entries)"

    @property
    def names(self) -> list[str]:
        return sorted(self._entries)

    def public_entries(self) -> Iterator[tuple[str, Json]]:
        """Every ``*.pub`` entry (fioctl matches on content, not on file names), parsed."""
        for name in self.names:
            if name.endswith(".pub"):
                yield name, _parse_public_entry(f"{self.source} entry {name}", self._entries[name])

    def private_entry(self, pub_name: str) -> tuple[str, Json]:
        """The ``.sec`` twin of a ``.pub`` entry: fioctl replaces the first ``.pub`` in the name."""
        sec_name = pub_name.replace(".pub", ".sec", 1)
        raw = self._entries.get(sec_name)
        if raw is None:
            raise TufError(f"{self.source} has {pub_name} but not its private key {sec_name}")
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None  # the parse error would quote the secret: drop it outside the except block
        if not isinstance(doc, dict) or not isinstance(doc.get("keyval"), dict):
            raise TufError(f"{self.source} entry {sec_name} is not a private key in fioctl's JSON form")
        return sec_name, doc


def _parse_public_entry(label: str, raw: bytes) -> Json:
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("keyval"), dict):
        raise TufError(f"{label} is not a public key in fioctl's JSON form")
    return doc


def load_key_archive(data: bytes, source: str = "key archive") -> KeyArchive:
    """Read a fioctl key archive (gzip'd tar) in memory, refusing anything a key archive never has:
    absolute or ``..`` paths, links, devices, duplicate names, oversized members or a gzip bomb.
    ``source`` names the archive in every message (``key archive PATH``)."""
    try:
        if len(data) > MAX_ARCHIVE_BYTES:
            raise TufError(f"key archive is too large ({len(data)} bytes, limit {MAX_ARCHIVE_BYTES})")
        return KeyArchive(_read_entries(_gunzip_bounded(data)), source)
    except TufError as exc:
        if source == "key archive":
            raise
        raise TufError(str(exc).replace("key archive", source, 1)) from None


def _read_entries(tar_bytes: bytes) -> dict[str, bytes]:
    import tarfile  # as in key_archive_bytes

    entries: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_ARCHIVE_MEMBERS:
                    raise TufError(f"key archive has more than {MAX_ARCHIVE_MEMBERS} entries")
                _check_member(member)
                if member.isdir():
                    continue
                if member.name in entries:
                    raise TufError(f"key archive has the entry {member.name} twice")
                member_file = tar.extractfile(member)
                if member_file is None:  # _check_member lets only regular files and directories through
                    raise TufError(f"key archive entry {member.name!r} is not a regular file")
                entries[member.name] = member_file.read()
    except tarfile.TarError:
        raise TufError("key archive is not a gzip'd tar file") from None
    return entries


def load_key_archive_b64(text: str, source: str = "key archive") -> KeyArchive:
    """Read a key archive carried as base64 text (``RECONCILE_KEYS``), decoded in memory only.
    White space (line wrapping) is ignored; ``source`` names the input in error messages."""
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        data = None
    if not data:
        raise TufError(f"{source} is not valid base64 (expected a base64-encoded targets.only.key.tgz)")
    return load_key_archive(data, source if source == "key archive" else f"key archive {source}")


def load_key_archive_file(path: str | os.PathLike[str]) -> KeyArchive:
    """Read a key archive file into memory (size-limited) and parse it."""
    try:
        # O_NONBLOCK: a FIFO or a device opens at once instead of waiting for a writer, and is refused
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise TufError(f"cannot read key archive {os.fspath(path)}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TufError(f"key archive {os.fspath(path)} is not a regular file")
        os.set_blocking(fd, True)
        try:
            data = f.read(MAX_ARCHIVE_BYTES + 1)
        except OSError as e:
            raise TufError(f"cannot read key archive {os.fspath(path)}: {e.strerror}") from None
    return load_key_archive(data, f"key archive {os.fspath(path)}")


def _gunzip_bounded(data: bytes) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            raw = gz.read(MAX_ARCHIVE_UNPACKED + 1)
    except (OSError, EOFError, zlib.error):
        raise TufError("key archive is not a gzip'd tar file") from None
    if len(raw) > MAX_ARCHIVE_UNPACKED:
        raise TufError(f"key archive unpacks to more than {MAX_ARCHIVE_UNPACKED} bytes (refusing a gzip bomb)")
    return raw


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise TufError(f"key archive entry {name!r} has an absolute path")
    if ".." in parts or "\\" in name:
        raise TufError(f"key archive entry {name!r} leaves the archive (..)")
    if member.issym() or member.islnk():
        raise TufError(f"key archive entry {name!r} is a link")
    if not (member.isreg() or member.isdir()):
        raise TufError(f"key archive entry {name!r} is not a regular file")
    if member.size > MAX_ARCHIVE_MEMBER:
        raise TufError(f"key archive entry {name!r} is too large ({member.size} bytes, limit {MAX_ARCHIVE_MEMBER})")
