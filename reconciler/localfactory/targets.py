"""CI targets and production targets of the local factory (reference §1.3-1.4, §4.2).

CI targets are stored one row per target (``meta`` = the ``{length, hashes, custom}`` object) and
published as one CI ``targets.json`` signed by the online key, re-signed whenever a build is added.
Production targets are one signed envelope per tag, written only by completing a wave. The two sets
are isolated: nothing here ever copies one into the other except a wave (waves.py).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import timedelta

from reconciler import signing

from . import store, trust
from .shapes import JsonObject

CI_TARGETS_LIFETIME = timedelta(days=10 * 365)


def ci_target_meta(
    factory: str, hwid: str, version: int, tags: list[str], created: int, *, static_deltas: bool
) -> JsonObject:
    """A CI target as the Foundries CI publishes an OSTree build (length 0, sha256 = the commit), with
    ``custom.delta-stats`` when static deltas to it were generated."""
    commit = hashlib.sha256(f"{factory}:{hwid}:{version}".encode()).hexdigest()
    custom: dict[str, object] = {
        "createdAt": store.iso(created),
        "hardwareIds": [hwid],
        "name": f"{hwid}-lmp",
        "tags": list(tags),
        "targetFormat": "OSTREE",
        "updatedAt": store.iso(created),
        "uri": f"https://ci.foundries.io/projects/{factory}/lmp/builds/{version}",
        "version": str(version),
    }
    if static_deltas:
        custom["delta-stats"] = delta_stats(factory, hwid, version)
    return {"custom": custom, "hashes": {"sha256": commit}, "length": 0}


def delta_stats(factory: str, hwid: str, version: int) -> JsonObject:
    """``custom.delta-stats`` (reference §1.4: ``{sha256, size}``, fioctl's ``DeltaStats``): the digest and
    size of the file describing the static deltas to this target. Made up, but fixed per target."""
    digest = hashlib.sha256(f"{factory}:{hwid}:{version}:delta-stats".encode()).hexdigest()
    return {"sha256": digest, "size": 512 + int(digest[:4], 16) % 4096}


def add_ci_build(
    conn: sqlite3.Connection, version: int, hwids: list[str], tags: list[str], *, static_deltas: bool = True
) -> list[str]:
    """Publish CI build ``version`` for these hardware ids (a target ``<hwid>-lmp-<version>`` each), with
    static deltas unless told otherwise (the local factory's builds have them by default)."""
    factory, ts = store.factory_name(conn), store.now(conn)
    names = []
    for hwid in hwids:
        name = f"{hwid}-lmp-{version}"
        meta = ci_target_meta(factory, hwid, version, tags, ts, static_deltas=static_deltas)
        conn.execute(
            "INSERT INTO ci_targets(name, version, hwid, tags, meta, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (name, version, hwid, json.dumps(tags), signing.canonical_json(meta).decode(), ts),
        )
        names.append(name)
    resign_ci_targets(conn)
    return names


def add_static_deltas(conn: sqlite3.Connection, version: int) -> list[str]:
    """Give the targets of CI build ``version`` that have none a ``custom.delta-stats``, as generating
    static deltas does (``fioctl targets static-deltas``); returns their names (empty: all had one)."""
    factory, ts = store.factory_name(conn), store.now(conn)
    added = []
    for name, meta in ci_files(conn, version).items():
        custom = meta["custom"]
        if "delta-stats" in custom:
            continue
        hwid = (custom.get("hardwareIds") or [""])[0]
        meta["custom"] = {**custom, "delta-stats": delta_stats(factory, hwid, version), "updatedAt": store.iso(ts)}
        conn.execute("UPDATE ci_targets SET meta = ? WHERE name = ?", (signing.canonical_json(meta).decode(), name))
        added.append(name)
    if added:
        resign_ci_targets(conn)
    return added


def resign_ci_targets(conn: sqlite3.Connection) -> JsonObject:
    version = store.meta_int(conn, "ci_targets_version") + 1
    signed = {
        "_type": "Targets",
        "expires": signing.format_expires(store.to_datetime(store.now(conn)) + CI_TARGETS_LIFETIME),
        "targets": ci_files(conn),
        "version": version,
    }
    envelope = {"signatures": [trust.sign_online(conn, signed)], "signed": signed}
    store.set_meta(conn, "ci_targets_version", version)
    store.set_meta(conn, "ci_targets_json", envelope_text(envelope))
    return envelope


def envelope_text(envelope: JsonObject) -> str:
    """``{"signatures": [...], "signed": <canonical JSON>}``: ``signed`` keeps canonical key order when read back."""
    return (
        '{"signatures":'
        + json.dumps(envelope["signatures"], separators=(",", ":"))
        + ',"signed":'
        + signing.canonical_json(envelope["signed"]).decode()
        + "}"
    )


def ci_files(conn: sqlite3.Connection, version: int | None = None) -> dict[str, JsonObject]:
    if version is None:
        rows = conn.execute("SELECT name, meta FROM ci_targets ORDER BY name")
    else:
        rows = conn.execute("SELECT name, meta FROM ci_targets WHERE version = ? ORDER BY name", (version,))
    return {name: json.loads(meta) for name, meta in rows}


def ci_file(conn: sqlite3.Connection, name: str) -> JsonObject | None:
    row = conn.execute("SELECT meta FROM ci_targets WHERE name = ?", (name,)).fetchone()
    return json.loads(row[0]) if row else None


def ci_targets_json(conn: sqlite3.Connection) -> JsonObject | None:
    text = store.get_meta(conn, "ci_targets_json")
    return json.loads(text) if text else None


def ci_versions(conn: sqlite3.Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT DISTINCT version FROM ci_targets ORDER BY version")]


def prod_targets(conn: sqlite3.Connection, tag: str) -> JsonObject | None:
    row = conn.execute("SELECT body FROM prod_targets WHERE tag = ?", (tag,)).fetchone()
    return json.loads(row[0]) if row else None


def all_prod_targets(conn: sqlite3.Connection) -> dict[str, JsonObject]:
    return {tag: json.loads(body) for tag, body in conn.execute("SELECT tag, body FROM prod_targets ORDER BY tag")}


def set_prod_targets(conn: sqlite3.Connection, tag: str, envelope: JsonObject) -> None:
    conn.execute(
        "INSERT INTO prod_targets(tag, version, body, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(tag) DO UPDATE SET version = excluded.version, body = excluded.body, "
        "updated_at = excluded.updated_at",
        (tag, envelope["signed"]["version"], envelope_text(envelope), store.now(conn)),
    )


def target_version(meta: JsonObject) -> int | None:
    """``custom.version`` as an int (aktualizr sorts by it), None when absent or not a number."""
    version = (meta.get("custom") or {}).get("version")
    if version is None:
        return None
    try:
        return int(version)
    except (TypeError, ValueError):
        return None


def newest_by_hwid(files: dict[str, JsonObject], tag: str | None = None) -> dict[str, int]:
    """What aktualizr-lite would install from ``files``: per primary hardware id the highest version
    among OSTree targets (carrying ``tag`` in custom.tags when a tag is given; reference §5.2)."""
    best: dict[str, int] = {}
    for meta in files.values():
        custom = meta.get("custom") or {}
        if custom.get("targetFormat", "OSTREE") != "OSTREE":
            continue
        if tag is not None and tag not in (custom.get("tags") or []):
            continue
        version = target_version(meta)
        hwids = custom.get("hardwareIds") or []
        if version is None or not hwids:
            continue
        if version > best.get(hwids[0], -1):
            best[hwids[0]] = version
    return best
