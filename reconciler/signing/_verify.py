"""Signature checks against a root: one signature, or a role's threshold.

Used by the reconciler to check its own signature before sending, by the local factory to accept a
wave, and by its simulated devices.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding

from reconciler.signing._canonical import JsonObject, canonical_json
from reconciler.signing._errors import TufError
from reconciler.signing._keys import (
    METHOD_FOR_KEYTYPE,
    _keytype,
    _public_object,
    _public_value,
    _role,
    _root_signed,
)


def _signature_valid(public: JsonObject, signature: JsonObject, payload: bytes) -> bool:
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
        if isinstance(key, ed25519.Ed25519PublicKey):  # the key of keytype ED25519
            key.verify(raw, payload)
        else:
            # Go verifies with PSSSaltLengthAuto, so accept any salt; we sign with exactly 32 bytes.
            key.verify(raw, payload, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO), hashes.SHA256())
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


def verify_threshold(root: JsonObject, role: str, signed: JsonObject, signatures: Sequence[JsonObject]) -> list[str]:
    """Check that ``signed`` carries at least root's threshold of valid signatures for ``role``.

    Key ids are taken from root as given (never recomputed). A key counts once however many
    signatures it made, and two key ids for the same public key count as one key.
    Returns the key ids that signed validly; raises TufError below the threshold.
    """
    valid = valid_keyids(root, role, signed, signatures)
    _, threshold = _role(_root_signed(root), role)
    if len(valid) < threshold:
        raise TufError(f"{role} metadata has {len(valid)} valid signature(s) of the {threshold} root requires")
    return valid


def valid_keyids(root: JsonObject, role: str, signed: JsonObject, signatures: Sequence[JsonObject]) -> list[str]:
    """The key ids of ``role`` in root whose signature over ``signed`` verifies, each key once (as
    ``verify_threshold`` counts them), whatever the threshold: how far a wave is from it."""
    root_signed = _root_signed(root)
    keyids, _ = _role(root_signed, role)
    payload = canonical_json(signed)
    valid: list[str] = []
    seen_publics: set[tuple[str, str]] = set()
    for sig in signatures:
        kid = sig.get("keyid") if isinstance(sig, Mapping) else None
        key = root_signed["keys"].get(kid) if kid in keyids else None
        if not isinstance(kid, str) or not isinstance(key, Mapping) or kid in valid:
            continue
        try:
            identity = (_keytype(key), _public_value(key))
        except TufError:
            continue
        if identity in seen_publics or not _signature_valid(key, sig, payload):
            continue
        seen_publics.add(identity)
        valid.append(kid)
    return valid


def verify_signature(root: JsonObject, role: str, signed: JsonObject, signature: JsonObject) -> str:
    """Check one signature made by a key of ``role`` in root, whatever the threshold (the reconciler
    checks its own offline signature before sending; the service adds the online one). Returns the key id."""
    root_signed = _root_signed(root)
    keyids, _ = _role(root_signed, role)
    kid = signature.get("keyid")
    if not isinstance(kid, str) or kid not in keyids or not isinstance(root_signed["keys"].get(kid), Mapping):
        raise TufError(f"signature key {kid} is not a {role} key in root")
    if not _signature_valid(root_signed["keys"][kid], signature, canonical_json(signed)):
        raise TufError(f"the signature by key {kid} does not verify against root")
    return kid
