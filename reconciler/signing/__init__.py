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
"""

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
from reconciler.signing._canonical import DEFAULT_EXPIRES_DAYS, canonical_json, default_expires, format_expires
from reconciler.signing._errors import TufError
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
