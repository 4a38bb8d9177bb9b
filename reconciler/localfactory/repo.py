"""The device-facing TUF repository of the local factory: one per device view, complete.

A device fetches from ``/ota/gateway/{factory}/repo/``: ``root.json`` and ``N.root.json`` (the CI or
production root chain), ``timestamp.json``, ``snapshot.json`` and ``targets.json``. Which targets it
gets is its *view* (fleet.py): the CI targets for a CI device, its tag's production targets, or the
targets of the active wave that staged it. The root declares the snapshot and timestamp roles with
the online key (trust.py), so this module signs both with that key.

Versions (reference §5.3, update-server's rule; the reference says nothing about the cloud's):

- targets: as published: CI targets count up on every build; production and wave targets carry the
  wave's target version, which must exceed the tag's production version (``waves init``);
- snapshot version = targets version; it lists ``targets.json`` by version;
- timestamp version = targets version x 1000 + k, where k counts re-signings: a timestamp lives
  ``TIMESTAMP_LIFETIME`` (7 days, update-server's default) and is re-signed every ``RESIGN_DAYS``
  UTC days after the targets were published, so a device always finds one valid for 4 days or more.

Choices where the reference is silent:

- the re-signing count starts when the targets *version* was first published: for production
  targets that is the creation of the wave that completed into them, so a device moving from a
  wave to its tag's production targets at complete never sees its timestamp version go down;
- k stops at 999 (the next targets version's range starts at +1000): a view unchanged for about
  eight years of simulated time lets its timestamp expire, and devices refuse it, rather than
  reuse a version;
- snapshot expiry = the targets' expiry; snapshot and timestamp list ``version`` only (no hashes);
- every file is computed from the stored targets and the clock, never written: a read is a pure
  function of the database. Signatures are deterministic (ed25519) and cached per payload, so a
  fleet of devices fetching the same view costs one signature per distinct file.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from datetime import timedelta

from msgspec import Struct

from reconciler import signing

from . import store, targets, trust
from .shapes import JsonObject

DAY = 86400
TIMESTAMP_LIFETIME = timedelta(days=7)
RESIGN_DAYS = 3
PER_TARGETS_VERSION = 1000  # timestamp versions per targets version
ROOT_FILE = re.compile(r"^(?:(\d+)\.)?root\.json$")
_SIG_CACHE_MAX = 4096

_sigs: dict[tuple[str, bytes], JsonObject] = {}
_sigs_lock = threading.Lock()


class View(Struct, frozen=True):
    """The targets one class of devices fetches, and which root chain verifies them."""

    kind: str  # "ci" | "prod" | "wave"
    key: str  # tag for ci/prod, wave id for wave
    root_kind: str  # "ci" | "prod"
    targets: JsonObject  # the signed targets envelope
    published: int  # when this targets version was first published (UNIX seconds)

    @property
    def version(self) -> int:
        return int(self.targets["signed"]["version"])


def view(conn: sqlite3.Connection, kind: str, key: str) -> View | None:
    """The view ``(kind, key)`` as fleet.device_source_key names it; None when it has no targets."""
    if kind == "ci":
        envelope = targets.ci_targets_json(conn)
        if envelope is None:
            return None
        published = conn.execute("SELECT max(created_at) FROM ci_targets").fetchone()[0]
        return View("ci", key, "ci", envelope, int(published or 0))
    if kind == "prod":
        row = conn.execute("SELECT body, version, updated_at FROM prod_targets WHERE tag = ?", (key,)).fetchone()
        if row is None:
            return None
        wave = conn.execute(
            "SELECT min(created_at) FROM waves WHERE tag = ? AND version = ? AND status = 'complete'", (key, row[1])
        ).fetchone()[0]
        return View("prod", key, "prod", json.loads(row[0]), int(wave if wave is not None else row[2]))
    row = conn.execute("SELECT signed, signatures, created_at FROM waves WHERE id = ?", (int(key),)).fetchone()
    if row is None:
        return None
    return View("wave", key, "prod", {"signatures": json.loads(row[1]), "signed": json.loads(row[0])}, int(row[2]))


def snapshot(conn: sqlite3.Connection, v: View) -> JsonObject:
    """``snapshot.json`` of a view: its version is the targets version, and lists it."""
    signed = {
        "_type": "Snapshot",
        "expires": v.targets["signed"]["expires"],
        "meta": {"targets.json": {"version": v.version}},
        "version": v.version,
    }
    return _envelope(conn, signed)


def resignings(v: View, now: int) -> int:
    """How many times the view's timestamp has been re-signed by ``now`` (at most 999)."""
    days = max(0, now // DAY - v.published // DAY)
    return min(PER_TARGETS_VERSION - 1, days // RESIGN_DAYS)


def timestamp(conn: sqlite3.Connection, v: View, now: int) -> JsonObject:
    """``timestamp.json`` of a view at ``now`` (see the module docstring for version and expiry)."""
    k = resignings(v, now)
    signed_at = (v.published // DAY + k * RESIGN_DAYS) * DAY
    signed = {
        "_type": "Timestamp",
        "expires": signing.format_expires(store.to_datetime(max(signed_at, v.published)) + TIMESTAMP_LIFETIME),
        "meta": {"snapshot.json": {"version": v.version}},
        "version": v.version * PER_TARGETS_VERSION + k,
    }
    return _envelope(conn, signed)


def file(conn: sqlite3.Connection, v: View | None, root_kind: str, name: str, now: int) -> JsonObject | None:
    """One file of the gateway's ``repo/`` for a device of this view; None when there is none."""
    match = ROOT_FILE.match(name)
    if match:
        return trust.root(conn, root_kind, int(match.group(1)) if match.group(1) else None)
    if v is None:
        return None
    if name == "targets.json":
        return v.targets
    if name == "snapshot.json":
        return snapshot(conn, v)
    if name == "timestamp.json":
        return timestamp(conn, v, now)
    return None


def _envelope(conn: sqlite3.Connection, signed: JsonObject) -> JsonObject:
    signer = trust.online_signer(conn)
    payload = signing.canonical_json(signed)
    key = (signer.keyid, payload)
    with _sigs_lock:
        sig = _sigs.get(key)
    if sig is None:
        sig = signer.sign_bytes(payload)
        with _sigs_lock:
            if len(_sigs) >= _SIG_CACHE_MAX:
                _sigs.clear()
            _sigs[key] = sig
    return {"signatures": [dict(sig)], "signed": signed}
