"""TUF metadata the Foundries way: canonical JSON, offline key archives, wave targets, signatures.

Foundries ("ATS"-style) TUF is not spec TUF: key ids are sha256 of the DER SubjectPublicKeyInfo,
keys are ``{"keytype": "ED25519"|"RSA", "keyval": {"public": hex-or-PEM}}`` with no scheme, and
signatures are ``{"keyid", "method", "sig": base64}`` (reference/foundries-api.md §3-4). python-tuf
cannot read it, so this module is the one implementation used by the reconciler to sign and check its
own signature, and by the local factory to accept a wave and to verify on its simulated devices.

Key material never leaves this module in readable form: reprs hide it, error messages never quote
it, exceptions raised while parsing secrets carry no context, and archives are read in memory only.
"""

from __future__ import annotations

import base64
import binascii
import copy
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import PurePosixPath

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from typing import TYPE_CHECKING

from reconciler.errors import UserError

if TYPE_CHECKING:  # securesystemslib.signer pulls in every KMS backend it finds: import it only to sign
    from securesystemslib.signer import SecretsHandler, Signer, SSlibKey

DEFAULT_EXPIRES_DAYS = 365

# Limits for key archives. Real ones hold a handful of keys of a few KiB each.
MAX_ARCHIVE_BYTES = 1 << 20
MAX_ARCHIVE_UNPACKED = 4 << 20
MAX_ARCHIVE_MEMBER = 64 << 10
MAX_ARCHIVE_MEMBERS = 256

METHOD_FOR_KEYTYPE = {"ED25519": "ed25519", "RSA": "rsassa-pss-sha256"}
_INT64 = 1 << 63


class TufError(UserError):
    """Signing, verification or key handling refused; the message never holds key material."""


# --------------------------------------------------------------------------- canonical JSON

# In json.dumps output, escapes fioctl does not write (\b, \f, \u00XX for other control characters).
# A literal backslash followed by b/f/u also matches; that only costs the slow path.
_ODD_ESCAPE = re.compile(r"\\[bfu]")
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def canonical_json(obj) -> bytes:
    """Encode ``obj`` exactly as fioctl's canonical JSON encoder does (reference §4.3).

    Sorted keys, no white space, only ``\\ " \\n \\r \\t`` escaped (other control characters and
    non-ASCII written raw as UTF-8), integral floats written as integers, other floats refused.
    Signatures are made over these bytes, so both sides must produce them byte for byte.
    ``json.dumps`` (C accelerated) gives the same bytes for plain data without floats and
    without other control characters; it is used when a cheap check shows that holds.
    """
    try:
        if _is_plain(obj):
            text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False)
            if not _ODD_ESCAPE.search(text):
                return _utf8(text)
        parts: list[str] = []
        _encode(obj, parts)
    except RecursionError:
        raise TufError("canonical JSON cannot encode circular or too deeply nested data") from None
    return _utf8("".join(parts))


_SCALARS = frozenset({str, int, bool, type(None)})


def _is_plain(o) -> bool:
    """True if ``o`` holds only dicts with str keys, lists, str, int, bool and None (no floats).
    Exact types only: subclasses (IntEnum, OrderedDict, ...) take the general encoder."""
    t = type(o)
    if t is dict:
        for k, v in o.items():
            if type(k) is not str:
                return False
            tv = type(v)
            if tv is dict or tv is list:
                if not _is_plain(v):
                    return False
            elif tv not in _SCALARS:
                return False
        return True
    if t is list:
        for v in o:
            tv = type(v)
            if tv is dict or tv is list:
                if not _is_plain(v):
                    return False
            elif tv not in _SCALARS:
                return False
        return True
    return t in _SCALARS


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise TufError("canonical JSON cannot encode a string with a lone surrogate") from None


def _encode(o, parts: list[str]) -> None:
    """The general encoder: any Mapping, list/tuple, str, int, bool, None and integral floats."""
    if isinstance(o, str):
        parts.append('"' + o.translate(_ESCAPES) + '"')
    elif o is None:
        parts.append("null")
    elif o is True:
        parts.append("true")
    elif o is False:
        parts.append("false")
    elif isinstance(o, int):
        parts.append(int.__repr__(o))
    elif isinstance(o, float):
        parts.append(_integral_float(o))
    elif isinstance(o, Mapping):
        parts.append("{")
        items = list(o.items())
        for k, _ in items:
            if not isinstance(k, str):
                raise TufError(f"canonical JSON object keys must be strings, not {type(k).__name__}")
        items.sort(key=lambda kv: kv[0])
        for i, (k, v) in enumerate(items):
            if i:
                parts.append(",")
            parts.append('"' + k.translate(_ESCAPES) + '":')
            _encode(v, parts)
        parts.append("}")
    elif isinstance(o, (list, tuple)):
        parts.append("[")
        for i, v in enumerate(o):
            if i:
                parts.append(",")
            _encode(v, parts)
        parts.append("]")
    else:
        raise TufError(f"canonical JSON cannot encode a {type(o).__name__}")


def _integral_float(f: float) -> str:
    """fioctl writes 1.0 as 1 and refuses 1.5; beyond int64 Go's behaviour is unclear, so refuse."""
    if f != f or f in (float("inf"), float("-inf")) or f != int(f):
        raise TufError(f"canonical JSON cannot encode the non-integral number {f!r}")
    if not -_INT64 <= int(f) < _INT64:
        raise TufError(f"canonical JSON cannot encode the number {f!r}: out of the 64-bit range")
    return str(int(f))


def format_expires(dt: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC, rounded to whole seconds, half up, like Go's Round(time.Second).

    aktualizr on devices cannot parse fractional seconds. A naive datetime is taken as UTC.
    """
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    dt = dt.astimezone(timezone.utc)
    if dt.microsecond >= 500_000:
        dt += timedelta(seconds=1)
    return dt.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_expires(now: datetime, days: int = DEFAULT_EXPIRES_DAYS) -> datetime:
    """fioctl's default wave expiry: ``now + days`` (365), before rounding by format_expires."""
    return now + timedelta(days=days)


# --------------------------------------------------------------------------- public keys


def _keytype(key: Mapping) -> str:
    """The upper-case key type; fioctl parses it case-insensitively."""
    kt = str(key.get("keytype", "")).upper() if isinstance(key, Mapping) else ""
    if kt not in METHOD_FOR_KEYTYPE:
        raise TufError(f"unsupported key type {kt or '(none)'!r}: expected ED25519 or RSA")
    return kt


def _shown_keytype(value) -> str:
    """A .sec file's keytype as it may appear in an error: any other text there could be key material."""
    if isinstance(value, str) and value.upper() in METHOD_FOR_KEYTYPE:
        return repr(value)
    return "an unsupported key type"


def _public_value(key: Mapping) -> str:
    keyval = key.get("keyval")
    public = keyval.get("public") if isinstance(keyval, Mapping) else None
    if not isinstance(public, str):
        raise TufError("public key has no keyval.public")
    return public.strip()


@lru_cache(maxsize=256)
def _load_public(keytype: str, public: str):
    """A cryptography public key object; cached because devices verify with the same few keys."""
    try:
        if keytype == "ED25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
        key = serialization.load_pem_public_key(public.encode())
    except ValueError:
        raise TufError(f"invalid {keytype} public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise TufError("invalid RSA public key: not an RSA key")
    return key


def _public_object(key: Mapping):
    return _load_public(_keytype(key), _public_value(key))


def _spki_der(public_obj) -> bytes:
    return public_obj.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(public: Mapping) -> str:
    """Foundries key id: hex sha256 of the DER SubjectPublicKeyInfo (not the TUF-spec key id)."""
    return hashlib.sha256(_spki_der(_public_object(public))).hexdigest()


def _public_dict(keytype: str, public_obj) -> dict:
    if keytype == "ED25519":
        value = public_obj.public_bytes_raw().hex()
    else:
        value = public_obj.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
    return {"keytype": keytype, "keyval": {"public": value}}


@dataclass
class KeyPair:
    """A key in fioctl's JSON form; ``private`` is excluded from repr and str."""

    public: dict
    private: dict = field(repr=False)
    keyid: str


def generate_keypair(keytype: str = "ED25519", bits: int = 4096) -> KeyPair:
    """A new key as fioctl writes it: ED25519 hex seed, or RSA PKCS#1 PEM (4096 bits by default)."""
    kt = _keytype({"keytype": keytype})
    if kt == "ED25519":
        priv = ed25519.Ed25519PrivateKey.generate()
        secret = priv.private_bytes_raw().hex()
    else:
        priv = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        secret = priv.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
    public = _public_dict(kt, priv.public_key())
    return KeyPair(public, {"keytype": kt, "keyval": {"private": secret}}, key_id(public))


# --------------------------------------------------------------------------- key archives


def key_archive_bytes(pairs: Sequence[KeyPair], role: str = "targets") -> bytes:
    """A fioctl-format tgz: ``tufrepo/keys/fioctl-<role>-<keyid>.pub|.sec``, gzip mtime 0."""
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
    repr shows only how many entries it has."""

    def __init__(self, entries: dict[str, bytes]):
        self._entries = entries

    def __repr__(self) -> str:
        return f"KeyArchive({len(self._entries)} entries)"

    @property
    def names(self) -> list[str]:
        return sorted(self._entries)

    def public_entries(self) -> Iterator[tuple[str, dict]]:
        """Every ``*.pub`` entry (fioctl matches on content, not on file names), parsed."""
        for name in self.names:
            if name.endswith(".pub"):
                yield name, _parse_public_entry(name, self._entries[name])

    def private_entry(self, pub_name: str) -> tuple[str, dict]:
        """The ``.sec`` twin of a ``.pub`` entry: fioctl replaces the first ``.pub`` in the name."""
        sec_name = pub_name.replace(".pub", ".sec", 1)
        raw = self._entries.get(sec_name)
        if raw is None:
            raise TufError(f"key archive has {pub_name} but not its private key {sec_name}")
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None  # the parse error would quote the secret: drop it outside the except block
        if not isinstance(doc, dict) or not isinstance(doc.get("keyval"), dict):
            raise TufError(f"key archive entry {sec_name} is not a private key in fioctl's JSON form")
        return sec_name, doc


def _parse_public_entry(name: str, raw: bytes) -> dict:
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("keyval"), dict):
        raise TufError(f"key archive entry {name} is not a public key in fioctl's JSON form")
    return doc


def load_key_archive(data: bytes) -> KeyArchive:
    """Read a fioctl key archive (gzip'd tar) in memory, refusing anything a key archive never has:
    absolute or ``..`` paths, links, devices, duplicate names, oversized members or a gzip bomb."""
    if len(data) > MAX_ARCHIVE_BYTES:
        raise TufError(f"key archive is too large ({len(data)} bytes, limit {MAX_ARCHIVE_BYTES})")
    return KeyArchive(_read_entries(_gunzip_bounded(data)))


def _read_entries(tar_bytes: bytes) -> dict[str, bytes]:
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
                entries[member.name] = tar.extractfile(member).read()
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
    return load_key_archive(data)


def load_key_archive_file(path: str | os.PathLike) -> KeyArchive:
    """Read a key archive file into memory (size-limited) and parse it."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_ARCHIVE_BYTES + 1)
    except OSError as e:
        raise TufError(f"cannot read key archive {os.fspath(path)}: {e.strerror}") from None
    return load_key_archive(data)


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


# --------------------------------------------------------------------------- private keys and signers


def _private_object(label: str, sec: dict, public: Mapping):
    """Parse a ``.sec`` key (ED25519 hex seed or 64-byte Go key; RSA PEM) and check it is the
    private half of ``public``. No exception raised here carries the secret or a parse context;
    ``label`` names the key in messages."""
    keytype = _keytype(public)
    keyval = sec.get("keyval")
    secret = keyval.get("private") if isinstance(keyval, Mapping) else None
    priv = None
    if isinstance(secret, str):
        priv = _ed25519_private(secret) if keytype == "ED25519" else _rsa_private(secret)
    if priv is None:
        raise TufError(f"{label} does not hold a valid {keytype} private key")
    if _spki_der(priv.public_key()) != _spki_der(_public_object(public)):
        raise TufError(f"{label} does not match its public key")
    return priv


def _ed25519_private(secret: str):
    try:
        raw = bytes.fromhex(secret.strip())
    except ValueError:
        return None
    if len(raw) not in (32, 64):
        return None
    priv = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and raw[32:] != priv.public_key().public_bytes_raw():
        return None  # a Go key is seed || public; a wrong second half means a corrupt key
    return priv


def _rsa_private(secret: str):
    try:
        priv = serialization.load_pem_private_key(secret.strip().encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return priv if isinstance(priv, rsa.RSAPrivateKey) else None


def _sslib_key(keyid: str, public: Mapping) -> SSlibKey:
    """The securesystemslib view of a Foundries key (lower-case type plus the implied scheme)."""
    from securesystemslib.signer import SSlibKey

    kt = _keytype(public)
    scheme = METHOD_FOR_KEYTYPE[kt]
    return SSlibKey(keyid, kt.lower(), scheme, {"public": _public_value(public)})


class TargetsSigner:
    """Signs targets metadata in the Foundries form with any securesystemslib Signer
    (an archive key, a file2: PEM, a KMS or an HSM), under the key id root gives the key.
    RSA keys sign RSASSA-PSS with SHA-256 and a 32-byte salt (securesystemslib's digest-length
    salt), as fioctl and garage-sign do."""

    def __init__(self, signer: Signer, keyid: str, public: Mapping):
        self._signer = signer
        self.keyid = keyid
        self.public = {"keytype": _keytype(public), "keyval": {"public": _public_value(public)}}
        self.method = METHOD_FOR_KEYTYPE[self.public["keytype"]]

    def __repr__(self) -> str:
        return f"TargetsSigner(keyid={self.keyid!r}, method={self.method!r})"

    def sign(self, signed: Mapping) -> dict:
        """``{"keyid", "method", "sig"}`` over canonical_json(signed)."""
        return self.sign_bytes(canonical_json(signed))

    def sign_bytes(self, payload: bytes) -> dict:
        sig = self._signer.sign(payload)
        raw = bytes.fromhex(sig.signature)
        return {"keyid": self.keyid, "method": self.method, "sig": base64.b64encode(raw).decode()}


def signer_for_keypair(pair: KeyPair) -> TargetsSigner:
    """A signer for a key held in memory (local factory, tests)."""
    priv = _private_object(f"the private key of {pair.keyid}", pair.private, pair.public)
    from securesystemslib.signer import CryptoSigner

    return TargetsSigner(CryptoSigner(priv, _sslib_key(pair.keyid, pair.public)), pair.keyid, pair.public)


def _root_signed(root: Mapping) -> Mapping:
    """Accept a root envelope or its ``signed`` part."""
    signed = root.get("signed", root) if isinstance(root, Mapping) else None
    if not isinstance(signed, Mapping) or not isinstance(signed.get("keys"), Mapping):
        raise TufError("root metadata has no keys")
    return signed


def _role(root_signed: Mapping, role: str) -> tuple[list[str], int]:
    roles = root_signed.get("roles")
    spec = roles.get(role) if isinstance(roles, Mapping) else None
    if not isinstance(spec, Mapping) or not isinstance(spec.get("keyids"), list):
        raise TufError(f"root metadata has no {role} role")
    threshold = spec.get("threshold")
    if type(threshold) is not int or threshold < 1:
        raise TufError(f"root metadata gives the {role} role an invalid threshold {threshold!r}")
    return spec["keyids"], threshold


def offline_keyids(root: Mapping, online_public: Mapping) -> list[str]:
    """Root's targets key ids minus the online (Foundries-held) key, as ``waves init`` computes them.
    Every candidate must be present in root's keys."""
    signed = _root_signed(root)
    keyids, _ = _role(signed, "targets")
    online = _public_value(online_public)
    candidates = []
    for kid in keyids:
        key = signed["keys"].get(kid)
        if not isinstance(key, Mapping):
            raise TufError(f"Unable to find key {kid} in root.json")
        if _public_value(key) != online:
            candidates.append(kid)
    if not candidates:
        raise TufError(
            "Root role is not configured to sign Targets offline; "
            "run `fioctl keys tuf rotate-offline-key --role=targets`"
        )
    return candidates


def find_offline_signer(root: Mapping, archive: KeyArchive, online_public: Mapping) -> TargetsSigner:
    """fioctl's FindOneTufSigner: exactly one private key in the archive must belong to one of
    root's offline targets keys. Matching compares public key values, never file names."""
    signed = _root_signed(root)
    wanted = {_public_value(signed["keys"][kid]): kid for kid in offline_keyids(root, online_public)}
    found = []
    for pub_name, pub in archive.public_entries():
        kid = wanted.get(_public_value(pub))
        if kid is None:
            continue
        root_key = signed["keys"][kid]
        sec_name, sec = archive.private_entry(pub_name)
        if sec.get("keytype") != root_key.get("keytype"):
            raise TufError(
                f"key type mismatch: {sec_name} is {_shown_keytype(sec.get('keytype'))} but root gives key {kid} "
                f"as {root_key.get('keytype')!r}"
            )
        found.append((kid, root_key, _private_object(f"key archive entry {sec_name}", sec, root_key)))
    if not found:
        raise TufError(f"No private key found for key IDs: {sorted(wanted.values())}")
    if len(found) > 1:
        raise TufError(
            f"Found more than one active private key for key IDs {sorted(k for k, _, _ in found)}: "
            "this is unsupported and insecure"
        )
    kid, root_key, priv = found[0]
    from securesystemslib.signer import CryptoSigner

    return TargetsSigner(CryptoSigner(priv, _sslib_key(kid, root_key)), kid, root_key)


_PROBE = b"reconciler: which offline targets key is this?"


def signer_from_uri(
    uri: str, root: Mapping, online_public: Mapping, secrets_handler: SecretsHandler | None = None
) -> TargetsSigner:
    """A signer for root's offline targets key from a URI.

    ``envvar:NAME`` (the variable holds a base64 key archive, like RECONCILE_KEYS),
    ``archive:PATH`` (a fioctl key archive file), or any securesystemslib scheme
    (file2:, gcpkms:, awskms:, azurekms:, hsm:, hv:, ...), so the key can live in a KMS or an HSM;
    ``secrets_handler`` answers their questions (an HSM PIN). For those the key is identified by
    signing a probe and verifying it with each candidate key of root.
    """
    scheme, sep, rest = uri.partition(":")
    if not sep:
        raise TufError(f"key URI {uri!r} has no scheme (envvar:, archive:, file2:, gcpkms:, awskms:, hsm:, ...)")
    if scheme == "envvar":
        text = os.environ.get(rest)
        if not text:
            raise TufError(f"environment variable {rest} is not set or empty")
        return find_offline_signer(root, load_key_archive_b64(text, source=rest), online_public)
    if scheme == "archive":
        return find_offline_signer(root, load_key_archive_file(rest), online_public)
    from securesystemslib.signer import SIGNER_FOR_URI_SCHEME

    if scheme not in SIGNER_FOR_URI_SCHEME:
        known = ", ".join(sorted(["envvar", "archive", *SIGNER_FOR_URI_SCHEME]))
        raise TufError(f"unsupported key URI scheme {scheme!r}: use one of {known}")
    return _probe_uri_signer(uri, root, online_public, secrets_handler)


def _probe_uri_signer(
    uri: str, root: Mapping, online_public: Mapping, secrets_handler: SecretsHandler | None
) -> TargetsSigner:
    from securesystemslib.signer import Signer

    signed = _root_signed(root)
    matches, failures = [], []
    for kid in offline_keyids(root, online_public):
        public = signed["keys"][kid]
        try:
            signer = Signer.from_priv_key_uri(uri, _sslib_key(kid, public), secrets_handler)
            candidate = TargetsSigner(signer, kid, public)
            sig = candidate.sign_bytes(_PROBE)
        except Exception as e:  # noqa: BLE001 - KMS/HSM libraries raise anything; report it, try the next key
            failures.append(f"{type(e).__name__}: {e}")
            continue
        if _signature_valid(public, sig, _PROBE):
            matches.append(candidate)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise TufError(f"{uri} signs for more than one offline targets key; this is unsupported and insecure")
    detail = f" ({'; '.join(dict.fromkeys(failures))})" if failures else ""
    raise TufError(f"{uri} cannot sign for any offline targets key in root{detail}")


# --------------------------------------------------------------------------- verification


def _signature_valid(public: Mapping, signature: Mapping, payload: bytes) -> bool:
    """One Foundries signature over ``payload``; the method must fit the key type."""
    try:
        keytype = _keytype(public)
        key = _public_object(public)
    except TufError:
        return False
    if signature.get("method") != METHOD_FOR_KEYTYPE[keytype] or not isinstance(signature.get("sig"), str):
        return False
    try:
        raw = base64.b64decode(signature["sig"], validate=True)
        if keytype == "ED25519":
            key.verify(raw, payload)
        else:
            # Go verifies with PSSSaltLengthAuto, so accept any salt; we sign with exactly 32 bytes.
            key.verify(raw, payload, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO), hashes.SHA256())
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


def verify_threshold(root: Mapping, role: str, signed: Mapping, signatures: Sequence[Mapping]) -> list[str]:
    """Check that ``signed`` carries at least root's threshold of valid signatures for ``role``.

    Key ids are taken from root as given (never recomputed). A key counts once however many
    signatures it made, and two key ids for the same public key count as one key.
    Returns the key ids that signed validly; raises TufError below the threshold.
    """
    root_signed = _root_signed(root)
    keyids, threshold = _role(root_signed, role)
    payload = canonical_json(signed)
    valid: list[str] = []
    seen_publics: set[tuple[str, str]] = set()
    for sig in signatures:
        kid = sig.get("keyid") if isinstance(sig, Mapping) else None
        key = root_signed["keys"].get(kid) if kid in keyids else None
        if not isinstance(key, Mapping) or kid in valid:
            continue
        try:
            identity = (_keytype(key), _public_value(key))
        except TufError:
            continue
        if identity in seen_publics or not _signature_valid(key, sig, payload):
            continue
        seen_publics.add(identity)
        valid.append(kid)
    if len(valid) < threshold:
        raise TufError(f"{role} metadata has {len(valid)} valid signature(s) of the {threshold} root requires")
    return valid


def verify_signature(root: Mapping, role: str, signed: Mapping, signature: Mapping) -> str:
    """Check one signature made by a key of ``role`` in root, whatever the threshold (the reconciler
    checks its own offline signature before sending; the service adds the online one). Returns the key id."""
    root_signed = _root_signed(root)
    keyids, _ = _role(root_signed, role)
    kid = signature.get("keyid")
    if kid not in keyids or not isinstance(root_signed["keys"].get(kid), Mapping):
        raise TufError(f"signature key {kid} is not a {role} key in root")
    if not _signature_valid(root_signed["keys"][kid], signature, canonical_json(signed)):
        raise TufError(f"the signature by key {kid} does not verify against root")
    return kid


# --------------------------------------------------------------------------- root and wave targets


def make_root(
    *,
    version: int,
    expires: datetime,
    root_pairs: Sequence[KeyPair],
    targets_public: Sequence[Mapping],
    targets_threshold: int,
) -> dict:
    """A Foundries-style root envelope signed by every root key. Snapshot and timestamp are given the
    first targets key (the online key), as the service holds all online roles."""
    if not root_pairs or not targets_public:
        raise TufError("a root needs at least one root key and one targets key")
    if not 1 <= targets_threshold <= len(targets_public):
        raise TufError(f"targets threshold {targets_threshold} must be between 1 and {len(targets_public)}")
    keys = {pair.keyid: copy.deepcopy(pair.public) for pair in root_pairs}
    targets_ids = []
    for public in targets_public:
        kid = key_id(public)
        keys[kid] = {"keytype": _keytype(public), "keyval": {"public": public["keyval"]["public"]}}
        targets_ids.append(kid)
    online = {"keyids": targets_ids[:1], "threshold": 1}
    signed = {
        "_type": "Root",
        "consistent_snapshot": False,
        "expires": format_expires(expires),
        "keys": keys,
        "roles": {
            "root": {"keyids": [p.keyid for p in root_pairs], "threshold": 1},
            "snapshot": dict(online),
            "targets": {"keyids": targets_ids, "threshold": targets_threshold},
            "timestamp": dict(online),
        },
        "version": version,
    }
    payload = canonical_json(signed)
    return {"signatures": [signer_for_keypair(p).sign_bytes(payload) for p in root_pairs], "signed": signed}


def build_wave_targets(
    *,
    ci_targets: Mapping,
    prod_targets: Mapping | None,
    version: int,
    tag: str,
    source_tag: str | None = None,
    prune: Sequence[int] = (),
    expires: datetime,
) -> dict:
    """The ``signed`` part of a wave's targets, built like ``fioctl waves init`` (reference §2.1 2-8).

    ``ci_targets`` is the flat files map of ``GET targets?version=N``; ``prod_targets`` the tag's
    production targets envelope (or its ``signed``), or None. The result is the existing production
    targets plus the version's CI targets re-tagged with ``tag``; entries of ``prod_targets`` are
    shared, not copied, and never modified.
    """
    if type(version) is not int or not 0 <= version < 1 << 31:
        raise TufError(f"target version must be a 32-bit integer, not {version!r}")
    if not ci_targets:
        raise TufError(f"No targets found for version {version}")
    targets = _current_targets(prod_targets, version)
    for name in ci_targets:
        if name in targets:
            raise TufError(f"Target {name} already exists in production Targets for tag {tag}")
    for name, meta in ci_targets.items():
        custom = _custom(name, meta)
        if source_tag is not None and source_tag not in (custom.get("tags") or []):
            continue
        targets[name] = {**meta, "custom": {**custom, "tags": [tag]}}
    _prune(targets, version, prune)
    return {"_type": "Targets", "expires": format_expires(expires), "targets": targets, "version": version}


def _current_targets(prod_targets: Mapping | None, version: int) -> dict:
    if prod_targets is None:
        return {}
    signed = prod_targets.get("signed", prod_targets)
    if version <= signed.get("version", 0):
        raise TufError(
            "Cannot create a Wave for a version lower than or equal to production Targets for the same tag"
        )
    return dict(signed.get("targets") or {})


def _custom(name: str, meta) -> Mapping:
    custom = meta.get("custom") if isinstance(meta, Mapping) else None
    if not isinstance(custom, Mapping):
        raise TufError(f"Target {name} has no custom metadata")
    return custom


def _prune(targets: dict, version: int, prune: Sequence[int]) -> None:
    """Remove every target whose custom.version is one of ``prune`` (fioctl compares strings)."""
    if str(version) in map(str, prune):
        raise TufError("Cannot prune current version")
    unmatched = []
    for v in prune:
        names = [n for n, meta in targets.items() if str((meta.get("custom") or {}).get("version")) == str(v)]
        if not names:
            unmatched.append(str(v))
        for n in names:
            del targets[n]
    if unmatched:
        raise TufError(f"Unable to prune the following versions: {','.join(unmatched)}")
