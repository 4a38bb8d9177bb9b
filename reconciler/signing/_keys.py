"""Public keys the Foundries way: key ids (sha256 of the DER SubjectPublicKeyInfo), key pairs.

Foundries ("ATS"-style) keys are ``{"keytype": "ED25519"|"RSA", "keyval": {"public": hex-or-PEM}}`` with
no scheme (reference/foundries-api.md §3-4); python-tuf cannot read them, so this is our implementation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from reconciler.signing._canonical import Json, JsonObject
from reconciler.signing._errors import TufError

METHOD_FOR_KEYTYPE = {"ED25519": "ed25519", "RSA": "rsassa-pss-sha256"}
PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey  # the key types of METHOD_FOR_KEYTYPE
PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def _keytype(key: object) -> str:
    """The upper-case key type; fioctl parses it case-insensitively."""
    kt = str(key.get("keytype", "")).upper() if isinstance(key, Mapping) else ""
    if kt not in METHOD_FOR_KEYTYPE:
        raise TufError(f"unsupported key type {kt or '(none)'!r}: expected ED25519 or RSA")
    return kt


def _shown_keytype(value: object) -> str:
    """A .sec file's keytype as it may appear in an error: any other text there could be key material."""
    if isinstance(value, str) and value.upper() in METHOD_FOR_KEYTYPE:
        return repr(value)
    return "an unsupported key type"


def _public_value(key: JsonObject) -> str:
    keyval = key.get("keyval")
    public = keyval.get("public") if isinstance(keyval, Mapping) else None
    if not isinstance(public, str):
        raise TufError("public key has no keyval.public")
    return public.strip()


@lru_cache(maxsize=256)
def _load_public(keytype: str, public: str) -> PublicKey:
    """A cryptography public key object; cached because devices verify with the same few keys."""
    try:
        if keytype == "ED25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
        from cryptography.hazmat.primitives import serialization  # see _spki_der

        key = serialization.load_pem_public_key(public.encode())
    except ValueError:
        raise TufError(f"invalid {keytype} public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise TufError("invalid RSA public key: not an RSA key")
    return key


def _public_object(key: JsonObject) -> PublicKey:
    return _load_public(_keytype(key), _public_value(key))


def _spki_der(public_obj: PublicKey) -> bytes:
    # Imported where used: a plan verifies ED25519 signatures without it, and cryptography's serialization
    # brings its SSH keys, ciphers and bcrypt (about 25 ms of CPU).
    from cryptography.hazmat.primitives import serialization

    return public_obj.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(public: JsonObject) -> str:
    """Foundries key id: hex sha256 of the DER SubjectPublicKeyInfo (not the TUF-spec key id)."""
    return hashlib.sha256(_spki_der(_public_object(public))).hexdigest()


def _public_dict(keytype: str, public_obj: PublicKey) -> Json:
    if isinstance(public_obj, ed25519.Ed25519PublicKey):
        value = public_obj.public_bytes_raw().hex()
    else:
        from cryptography.hazmat.primitives import serialization  # see _spki_der

        value = public_obj.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
    return {"keytype": keytype, "keyval": {"public": value}}


@dataclass
class KeyPair:
    """A key in fioctl's JSON form; ``private`` is excluded from repr and str."""

    public: Json
    private: Json = field(repr=False)
    keyid: str


def generate_keypair(keytype: str = "ED25519", bits: int = 4096) -> KeyPair:
    """A new key as fioctl writes it: ED25519 hex seed, or RSA PKCS#1 PEM (4096 bits by default)."""
    kt = _keytype({"keytype": keytype})
    priv: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if kt == "ED25519":
        priv = ed25519.Ed25519PrivateKey.generate()
        secret = priv.private_bytes_raw().hex()
    else:
        from cryptography.hazmat.primitives import serialization  # see _spki_der

        priv = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        secret = priv.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
    public = _public_dict(kt, priv.public_key())
    return KeyPair(public, {"keytype": kt, "keyval": {"private": secret}}, key_id(public))


def _root_signed(root: object) -> JsonObject:
    """Accept a root envelope or its ``signed`` part."""
    signed = root.get("signed", root) if isinstance(root, Mapping) else None
    if not isinstance(signed, Mapping) or not isinstance(signed.get("keys"), Mapping):
        raise TufError("root metadata has no keys")
    return signed


def _role(root_signed: JsonObject, role: str) -> tuple[list[str], int]:
    roles = root_signed.get("roles")
    spec = roles.get(role) if isinstance(roles, Mapping) else None
    if not isinstance(spec, Mapping) or not isinstance(spec.get("keyids"), list):
        raise TufError(f"root metadata has no {role} role")
    threshold = spec.get("threshold")
    if type(threshold) is not int or threshold < 1:
        raise TufError(f"root metadata gives the {role} role an invalid threshold {threshold!r}")
    return spec["keyids"], threshold
