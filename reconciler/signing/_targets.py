"""Root and wave targets metadata: what init signs.

Wave targets are the tag's current production targets, with the wave's version added and pruned
versions removed (reference/foundries-api.md §2.3), expiring when the manifest says.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime

from reconciler.signing._canonical import Json, JsonObject, canonical_json, format_expires
from reconciler.signing._errors import TufError
from reconciler.signing._keys import KeyPair, _keytype, key_id
from reconciler.signing._signers import signer_for_keypair


def make_root(
    *,
    version: int,
    expires: datetime,
    root_pairs: Sequence[KeyPair],
    targets_public: Sequence[JsonObject],
    targets_threshold: int,
) -> Json:
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
    ci_targets: JsonObject,
    prod_targets: JsonObject | None,
    version: int,
    tag: str,
    source_tag: str | None = None,
    prune: Sequence[int] = (),
    expires: datetime,
) -> Json:
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


def _current_targets(prod_targets: JsonObject | None, version: int) -> Json:
    if prod_targets is None:
        return {}
    signed = prod_targets.get("signed", prod_targets)
    if version <= signed.get("version", 0):
        raise TufError("Cannot create a Wave for a version lower than or equal to production Targets for the same tag")
    return dict(signed.get("targets") or {})


def _custom(name: str, meta: object) -> JsonObject:
    custom = meta.get("custom") if isinstance(meta, Mapping) else None
    if not isinstance(custom, Mapping):
        raise TufError(f"Target {name} has no custom metadata")
    return custom


def _prune(targets: Json, version: int, prune: Sequence[int]) -> None:
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
