"""What a device's TUF client checks before it trusts targets (TUF spec §5.3-5.6, as aktualizr-lite).

The simulated fleet (fleet.py) and the tests run the same checks, written over our own signing code
so that the factory needs no TUF library at run time:

1. root: starting from the root it trusts, fetch ``N+1.root.json`` until there is none; each must
   be the next version, signed by a threshold of the trusted root's root keys and of its own; the
   final root must not have expired;
2. timestamp: a threshold of the root's timestamp keys; its version at least the trusted one
   (rollback); the snapshot version it lists at least the trusted snapshot's; not expired;
3. snapshot: the version the timestamp lists, exactly; the targets version it lists at least the
   trusted targets version (rollback); not expired;
4. targets: the version the snapshot lists, exactly; a threshold of the root's targets keys (two,
   online and offline, for production); not expired.

Any failure is ``Refused`` and the device keeps what it trusted before. Expiry is ``expires <= now``
(stricter than ``<``). ``Checked`` is the part that depends only on the bytes, so the fleet verifies
each distinct set of files once and then only compares versions and the clock per device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from msgspec import Struct

from reconciler import signing

from . import store
from .shapes import JsonObject, JsonValue


class Refused(Exception):
    """The device refuses the metadata (bad signature, rollback, mix-and-match, expiry)."""


class Trusted(Struct, frozen=True):
    """What a device trusts after a successful refresh (versions only, beside the root)."""

    root: JsonObject
    timestamp: int = 0
    snapshot: int = 0
    targets: int = 0


class Checked(Struct, frozen=True):
    """A verified set of files: the versions a device compares with its own, and the first expiry."""

    root: JsonObject
    timestamp: int
    snapshot: int
    targets: int
    expires: int  # the earliest expiry among root, timestamp, snapshot and targets (UNIX seconds)
    expiring: str  # which role expires first

    def refuse_for(self, trusted: Trusted, now: int) -> str:
        """Why a device that trusts ``trusted`` refuses these files at ``now`` ("" when it accepts)."""
        if self.expires <= now:
            return f"{self.expiring} metadata has expired"
        if self.timestamp < trusted.timestamp:
            return f"timestamp version {self.timestamp} is older than the trusted {trusted.timestamp}"
        if self.snapshot < trusted.snapshot:
            return f"snapshot version {self.snapshot} is older than the trusted {trusted.snapshot}"
        if self.targets < trusted.targets:
            return f"targets version {self.targets} is older than the trusted {trusted.targets}"
        return ""


def _version(envelope: JsonObject, role: str) -> int:
    version = envelope["signed"].get("version")
    if type(version) is not int or version < 1:
        raise Refused(f"{role} metadata has an invalid version {version!r}")
    return version


def _expires(envelope: JsonObject, role: str) -> int:
    try:
        return store.parse_time(envelope["signed"]["expires"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise Refused(f"{role} metadata has no valid expiry") from None


def _signed_by(root: JsonObject, role: str, envelope: JsonValue, type_: str) -> None:
    if not isinstance(envelope, dict) or not isinstance(envelope.get("signed"), dict):
        raise Refused(f"{role} metadata is not a signed envelope")
    if envelope["signed"].get("_type") != type_:
        raise Refused(f"{role} metadata has _type {envelope['signed'].get('_type')!r}, not {type_!r}")
    try:
        signing.verify_threshold(root, role, envelope["signed"], envelope.get("signatures") or [])
    except signing.TufError as e:
        raise Refused(str(e)) from None


def update_root(trusted_root: JsonObject, fetch_root: Callable[[int], JsonObject | None]) -> JsonObject:
    """Step 1 without the expiry check: walk ``N+1.root.json`` from the trusted root."""
    root = trusted_root
    while True:
        nxt = fetch_root(_version(root, "root") + 1)
        if nxt is None:
            return root
        _signed_by(root, "root", nxt, "Root")
        _signed_by(nxt, "root", nxt, "Root")
        if _version(nxt, "root") != _version(root, "root") + 1:
            raise Refused("root versions are not consecutive")
        root = nxt


def check(root: JsonObject, timestamp: JsonObject, snapshot: JsonObject, targets: JsonObject) -> Checked:
    """Steps 2-4 for the bytes alone (signatures, thresholds, the versions each file lists)."""
    _signed_by(root, "timestamp", timestamp, "Timestamp")
    listed = (timestamp["signed"].get("meta") or {}).get("snapshot.json") or {}
    _signed_by(root, "snapshot", snapshot, "Snapshot")
    if _version(snapshot, "snapshot") != listed.get("version"):
        raise Refused(
            f"snapshot version {snapshot['signed'].get('version')} is not the {listed.get('version')} "
            "the timestamp lists"
        )
    listed = (snapshot["signed"].get("meta") or {}).get("targets.json") or {}
    _signed_by(root, "targets", targets, "Targets")
    if _version(targets, "targets") != listed.get("version"):
        raise Refused(
            f"targets version {targets['signed'].get('version')} is not the {listed.get('version')} the snapshot lists"
        )
    expiries = [
        (_expires(e, role), role)
        for e, role in ((root, "root"), (timestamp, "timestamp"), (snapshot, "snapshot"), (targets, "targets"))
    ]
    expires, expiring = min(expiries)
    return Checked(
        root,
        _version(timestamp, "timestamp"),
        _version(snapshot, "snapshot"),
        _version(targets, "targets"),
        expires,
        expiring,
    )


def fingerprint(*envelopes: JsonObject) -> str:
    """A key for "the same files": the canonical bytes of each, hashed."""
    h = hashlib.sha256()
    for e in envelopes:
        h.update(signing.canonical_json(e))
    return h.hexdigest()


class Device:
    """One device's client: ``refresh`` runs the whole flow over ``fetch(file name) -> JSON or None``
    and keeps the new trusted state only when every check passes."""

    def __init__(self, first_root: JsonObject):
        _signed_by(first_root, "root", first_root, "Root")
        self.trusted = Trusted(first_root)

    def refresh(self, fetch: Callable[[str], JsonObject | None], now: int) -> JsonObject:
        """The targets the device now trusts; Refused (trusted state unchanged) otherwise."""
        root = update_root(self.trusted.root, lambda n: fetch(f"{n}.root.json"))
        timestamp, snapshot, targets = (fetch(f"{name}.json") for name in ("timestamp", "snapshot", "targets"))
        if timestamp is None or snapshot is None or targets is None:
            missing = [
                n
                for n, body in (("timestamp", timestamp), ("snapshot", snapshot), ("targets", targets))
                if body is None
            ]
            raise Refused(f"the repository has no {', '.join(missing)} metadata")
        checked = check(root, timestamp, snapshot, targets)
        problem = checked.refuse_for(self.trusted, now)
        if problem:
            raise Refused(problem)
        self.trusted = Trusted(root, checked.timestamp, checked.snapshot, checked.targets)
        return targets
