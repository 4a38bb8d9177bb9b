"""TUF metadata the Foundries way: canonical JSON, offline key archives, signers, verification, wave targets.

Foundries ("ATS"-style) TUF is not spec TUF: key ids are sha256 of the DER SubjectPublicKeyInfo,
keys are ``{"keytype": "ED25519"|"RSA", "keyval": {"public": hex-or-PEM}}`` with no scheme, and
signatures are ``{"keyid", "method", "sig": base64}`` (reference/foundries-api.md §3-4). python-tuf
cannot read it, so this package is the one implementation used by the reconciler to sign and check its
own signature, and by the local factory to accept a wave and to verify on its simulated devices.
(It is not called ``tuf``: that name belongs to python-tuf, which the tests and benches import.)

Key material never leaves this package in readable form: reprs hide it, error messages never quote
it, exceptions raised while parsing secrets carry no context, and archives are read in memory only.
One private module per job; this module is the public surface.

The modules load as their names are first asked for (``__getattr__``): a plan checks the waves'
signatures with ``valid_keyids`` alone, and that needs neither the key archives nor the signers, whose
imports (cryptography's serialization, with its SSH and cipher modules and bcrypt) took 25-30 ms of a
plan's CPU.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from reconciler.signing._canonical import DEFAULT_EXPIRES_DAYS, canonical_json, default_expires, format_expires
from reconciler.signing._errors import TufError

if TYPE_CHECKING:
    from reconciler.signing._archive import (
        MAX_ARCHIVE_BYTES,
        MAX_ARCHIVE_MEMBER,
        MAX_ARCHIVE_MEMBERS,
        MAX_ARCHIVE_UNPACKED,
        KeyArchive,
        key_archive_bytes,
        load_key_archive,
        load_key_archive_b64,
        load_key_archive_file,
    )
    from reconciler.signing._keys import METHOD_FOR_KEYTYPE, KeyPair, generate_keypair, key_id
    from reconciler.signing._signers import (
        ArchiveKey,
        TargetsSigner,
        archive_keys,
        describe_keys,
        find_offline_signer,
        offline_keyids,
        signer_for_keypair,
        signer_from_uri,
    )
    from reconciler.signing._targets import build_wave_targets, make_root
    from reconciler.signing._verify import valid_keyids, verify_signature, verify_threshold

# The module each lazily loaded name comes from.
_HOMES = {
    name: module
    for module, names in {
        "_archive": (
            "MAX_ARCHIVE_BYTES",
            "MAX_ARCHIVE_MEMBER",
            "MAX_ARCHIVE_MEMBERS",
            "MAX_ARCHIVE_UNPACKED",
            "KeyArchive",
            "key_archive_bytes",
            "load_key_archive",
            "load_key_archive_b64",
            "load_key_archive_file",
        ),
        "_keys": ("METHOD_FOR_KEYTYPE", "KeyPair", "generate_keypair", "key_id"),
        "_signers": (
            "ArchiveKey",
            "TargetsSigner",
            "archive_keys",
            "describe_keys",
            "find_offline_signer",
            "offline_keyids",
            "signer_for_keypair",
            "signer_from_uri",
        ),
        "_targets": ("build_wave_targets", "make_root"),
        "_verify": ("valid_keyids", "verify_signature", "verify_threshold"),
    }.items()
    for name in names
}


def __getattr__(name: str) -> object:
    """A public name of a module not loaded yet: loads that module (once; the name is kept here after)."""
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_EXPIRES_DAYS",
    "MAX_ARCHIVE_BYTES",
    "MAX_ARCHIVE_MEMBER",
    "MAX_ARCHIVE_MEMBERS",
    "MAX_ARCHIVE_UNPACKED",
    "METHOD_FOR_KEYTYPE",
    "ArchiveKey",
    "KeyArchive",
    "KeyPair",
    "TargetsSigner",
    "TufError",
    "archive_keys",
    "build_wave_targets",
    "canonical_json",
    "default_expires",
    "describe_keys",
    "find_offline_signer",
    "format_expires",
    "generate_keypair",
    "key_archive_bytes",
    "key_id",
    "load_key_archive",
    "load_key_archive_b64",
    "load_key_archive_file",
    "make_root",
    "offline_keyids",
    "signer_for_keypair",
    "signer_from_uri",
    "valid_keyids",
    "verify_signature",
    "verify_threshold",
]
