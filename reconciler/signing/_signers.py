"""Signers for the offline targets key: from a key archive, or a securesystemslib signer URI (KMS, HSM).

The offline key is found by matching root's targets key ids minus the online key; reprs hide key
material and exceptions raised while parsing secrets carry no context.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from msgspec import Struct

from reconciler.signing._archive import (
    KeyArchive,
    load_key_archive_b64,
    load_key_archive_file,
)
from reconciler.signing._canonical import Json, JsonObject, canonical_json
from reconciler.signing._errors import TufError
from reconciler.signing._keys import (
    METHOD_FOR_KEYTYPE,
    KeyPair,
    PrivateKey,
    _keytype,
    _public_object,
    _public_value,
    _role,
    _root_signed,
    _shown_keytype,
    _spki_der,
    key_id,
)
from reconciler.signing._verify import _signature_valid

# securesystemslib.signer pulls in every KMS backend it finds: import it only to sign. Its __init__
# re-exports its public names (SSlibKey, Signer, CryptoSigner, ...) without __all__ or ``as``, which
# strict mypy (no implicit re-export) reports; the names are its documented API, hence the ignores.
if TYPE_CHECKING:
    from securesystemslib.signer import SecretsHandler, Signer, SSlibKey  # type: ignore[attr-defined]


def _private_object(label: str, sec: JsonObject, public: JsonObject) -> PrivateKey:
    """Parse a ``.sec`` key (ED25519 hex seed or 64-byte Go key; RSA PEM) and check it is the
    private half of ``public``. No exception raised here carries the secret or a parse context;
    ``label`` names the key in messages."""
    keytype = _keytype(public)
    keyval = sec.get("keyval")
    secret = keyval.get("private") if isinstance(keyval, Mapping) else None
    priv: PrivateKey | None = None
    if isinstance(secret, str):
        priv = _ed25519_private(secret) if keytype == "ED25519" else _rsa_private(secret)
    if priv is None:
        raise TufError(f"{label} does not hold a valid {keytype} private key")
    if _spki_der(priv.public_key()) != _spki_der(_public_object(public)):
        raise TufError(f"{label} does not match its public key")
    return priv


def _ed25519_private(secret: str) -> ed25519.Ed25519PrivateKey | None:
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


def _rsa_private(secret: str) -> rsa.RSAPrivateKey | None:
    try:
        priv = serialization.load_pem_private_key(secret.strip().encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return priv if isinstance(priv, rsa.RSAPrivateKey) else None


def _sslib_key(keyid: str, public: JsonObject) -> SSlibKey:
    """The securesystemslib view of a Foundries key (lower-case type plus the implied scheme)."""
    from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]  # implicit re-export, see above

    kt = _keytype(public)
    scheme = METHOD_FOR_KEYTYPE[kt]
    return SSlibKey(keyid, kt.lower(), scheme, {"public": _public_value(public)})


class TargetsSigner:
    """Signs targets metadata in the Foundries form with any securesystemslib Signer
    (an archive key, a file2: PEM, a KMS or an HSM), under the key id root gives the key.
    RSA keys sign RSASSA-PSS with SHA-256 and a 32-byte salt (securesystemslib's digest-length
    salt), as fioctl and garage-sign do."""

    def __init__(self, signer: Signer, keyid: str, public: JsonObject):
        self._signer = signer
        self.keyid = keyid
        keytype = _keytype(public)
        self.public: Json = {"keytype": keytype, "keyval": {"public": _public_value(public)}}
        self.method = METHOD_FOR_KEYTYPE[keytype]

    def __repr__(self) -> str:
        return f"TargetsSigner(keyid={self.keyid!r}, method={self.method!r})"

    def sign(self, signed: JsonObject) -> Json:
        """``{"keyid", "method", "sig"}`` over canonical_json(signed)."""
        return self.sign_bytes(canonical_json(signed))

    def sign_bytes(self, payload: bytes) -> Json:
        sig = self._signer.sign(payload)
        raw = bytes.fromhex(sig.signature)
        return {"keyid": self.keyid, "method": self.method, "sig": base64.b64encode(raw).decode()}


def signer_for_keypair(pair: KeyPair) -> TargetsSigner:
    """A signer for a key held in memory (local factory, tests)."""
    priv = _private_object(f"the private key of {pair.keyid}", pair.private, pair.public)
    from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]  # implicit re-export, see above

    return TargetsSigner(CryptoSigner(priv, _sslib_key(pair.keyid, pair.public)), pair.keyid, pair.public)


def offline_keyids(root: JsonObject, online_public: JsonObject) -> list[str]:
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


class ArchiveKey(Struct, frozen=True):
    """One key a key archive holds: its Foundries key id and type (never its secret)."""

    keyid: str
    keytype: str

    def __str__(self) -> str:
        return f"{self.keytype} key {self.keyid}"


def archive_keys(archive: KeyArchive) -> list[ArchiveKey]:
    """Every key of ``archive``, each checked to be a whole pair (its ``.sec`` parses and matches its
    ``.pub``): what ``--keys FILE`` holds, said before it is needed, and in every error about it."""
    keys = []
    for pub_name, pub in archive.public_entries():
        sec_name, sec = archive.private_entry(pub_name)
        _private_object(f"{archive.source} entry {sec_name}", sec, pub)
        keys.append(ArchiveKey(key_id(pub), _keytype(pub)))
    if not keys:
        raise TufError(f"{archive.source} holds no keys (no *.pub entry): give a key archive from fioctl")
    return keys


def describe_keys(keys: Sequence[ArchiveKey]) -> str:
    """``ED25519 key 1f2e...`` or ``2 keys: ED25519 key 1f2e..., RSA key 9a8b...`` for a message."""
    if len(keys) == 1:
        return str(keys[0])
    return f"{len(keys)} keys: {', '.join(str(k) for k in keys)}"


def find_offline_signer(root: JsonObject, archive: KeyArchive, online_public: JsonObject) -> TargetsSigner:
    """fioctl's FindOneTufSigner: exactly one private key in the archive must belong to one of
    root's offline targets keys. Matching compares public key values, never file names. Every
    refusal names the archive (``archive.source``) and what it holds."""
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
                f"key type mismatch: {archive.source} entry {sec_name} is {_shown_keytype(sec.get('keytype'))} "
                f"but root gives key {kid} as {root_key.get('keytype')!r}"
            )
        found.append((kid, root_key, _private_object(f"{archive.source} entry {sec_name}", sec, root_key)))
    if not found:
        raise TufError(
            f"No private key found for key IDs: {sorted(wanted.values())} in {archive.source}, which holds "
            f"{describe_keys(archive_keys(archive))}; give the archive of one of those key IDs"
        )
    if len(found) > 1:
        raise TufError(
            f"Found more than one active private key for key IDs {sorted(k for k, _, _ in found)} in "
            f"{archive.source}: this is unsupported and insecure"
        )
    kid, root_key, priv = found[0]
    from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]  # implicit re-export, see above

    return TargetsSigner(CryptoSigner(priv, _sslib_key(kid, root_key)), kid, root_key)


_PROBE = b"reconciler: which offline targets key is this?"


def signer_from_uri(
    uri: str, root: JsonObject, online_public: JsonObject, secrets_handler: SecretsHandler | None = None
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
    from securesystemslib.signer import SIGNER_FOR_URI_SCHEME  # type: ignore[attr-defined]  # implicit re-export, see above

    if scheme not in SIGNER_FOR_URI_SCHEME:
        known = ", ".join(sorted(["envvar", "archive", *SIGNER_FOR_URI_SCHEME]))
        raise TufError(f"unsupported key URI scheme {scheme!r}: use one of {known}")
    return _probe_uri_signer(uri, root, online_public, secrets_handler)


def _probe_uri_signer(
    uri: str, root: JsonObject, online_public: JsonObject, secrets_handler: SecretsHandler | None
) -> TargetsSigner:
    from securesystemslib.signer import Signer  # type: ignore[attr-defined]  # implicit re-export, see above

    signed = _root_signed(root)
    matches, failures = [], []
    for kid in offline_keyids(root, online_public):
        public = signed["keys"][kid]
        try:
            signer = Signer.from_priv_key_uri(uri, _sslib_key(kid, public), secrets_handler)
            candidate = TargetsSigner(signer, kid, public)
            sig = candidate.sign_bytes(_PROBE)
        except Exception as e:
            failures.append(f"{type(e).__name__}: {e}")
            continue
        if _signature_valid(public, sig, _PROBE):
            matches.append(candidate)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise TufError(
            f"{uri} signs for more than one offline targets key ({', '.join(m.keyid for m in matches)}); "
            "this is unsupported and insecure"
        )
    detail = f" ({'; '.join(dict.fromkeys(failures))})" if failures else ""
    wanted = sorted(offline_keyids(root, online_public))
    raise TufError(f"{uri} cannot sign for any offline targets key in root, key IDs {wanted}{detail}")
