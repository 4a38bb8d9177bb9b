"""Devices (reference §1.6): the device list and a device, moving devices, adding devices.

Device JSON follows fioctl's ``Device`` struct: the list API names the group ``device-group`` (a
string), the single-device API adds ``group`` (an object, or null). ``last-seen`` is RFC 3339 with
``+00:00`` like the documented sample, "" for a device never seen. ``is-wave`` is true while an active
wave has staged the device (explicitly or through a fully rolled-out group). Extra fields the real
API does not document: ``hardware-id``, ``version`` (int).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
import sqlite3
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from typing import Any

from msgspec import Struct

from . import fleet, store, waves
from .errors import ApiError, bad_request, not_found
from .groups import group_id
from .shapes import DeviceRow, JsonObject, JsonValue

# As wave names (waves.NAME_RE): no dot segments, no final newline.
DEVICE_NAME_RE = re.compile(r"(?!\.\.?$)[a-zA-Z0-9_.:-]{1,100}")
HWID_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,100}$")
PAGE_LIMITS = range(1, 1001)
SORTS = {
    "name": "name",
    "-name": "name DESC",
    "last_seen": "ls",
    "-last_seen": "ls DESC",
    "created_at": "id",
    "-created_at": "id DESC",
}


def rnd_for(seed: str | int, device_uuid: str) -> int:
    """A device's fixed random number (selection order, check-in phase, outages), from the seed."""
    digest = hashlib.blake2b(f"{seed}:{device_uuid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


# ------------------------------------------------------------------------------------ devices

_DEV_COLS = "id, uuid, name, group_id, tag, is_prod, hwid, version, online, last_seen, rnd, wave_id, created_at, owner"


def _dev(row: Sequence[Any]) -> DeviceRow:
    """A row of the ``_DEV_COLS`` columns, by name."""
    did, uuid, name, gid, tag, is_prod, hwid, version, online, last_seen, rnd, wave_id, created_at, owner = row
    return {
        "id": did,
        "uuid": uuid,
        "name": name,
        "group_id": gid,
        "tag": tag,
        "is_prod": is_prod,
        "hwid": hwid,
        "version": version,
        "online": online,
        "last_seen": last_seen,
        "rnd": rnd,
        "wave_id": wave_id,
        "created_at": created_at,
        "owner": owner,
    }


def by_uuids(conn: sqlite3.Connection, uuids: list[str]) -> dict[str, DeviceRow]:
    out: dict[str, DeviceRow] = {}
    for i in range(0, len(uuids), 5000):
        chunk = uuids[i : i + 5000]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT {_DEV_COLS} FROM devices WHERE uuid IN ({marks})"  # noqa: S608 - fixed columns and ? marks; the UUIDs are bound
        for row in conn.execute(sql, chunk):
            d = _dev(row)
            out[d["uuid"]] = d
    return out


class View:
    """What device JSON needs besides the row: group names, target names, active waves, sources."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.now = store.now(conn)
        self.model = fleet.model(conn)
        self.factory = store.factory_name(conn)
        self.groups: dict[int, tuple[str, str]] = {
            gid: (name, desc) for gid, name, desc in conn.execute("SELECT id, name, description FROM device_groups")
        }
        self.active: dict[str, int] = {
            tag: wid for wid, tag in conn.execute("SELECT id, tag FROM waves WHERE status = 'active'")
        }
        self.full: dict[int, set[int]] = {}
        full_groups = (  # of the active waves only: a long history holds thousands of finished waves' groups
            "SELECT wave_id, group_id FROM wave_groups WHERE full_group = 1 AND wave_id IN "
            "(SELECT id FROM waves WHERE status = 'active')"
        )
        for wid, gid in conn.execute(full_groups):
            self.full.setdefault(wid, set()).add(gid)
        self._sources: dict[tuple[str, str], fleet.Source] = {}  # the views checked so far, by key
        self._targets: dict[tuple[int, str], tuple[str, str]] = {}  # a device page shares a few builds

    def target(self, version: int, hwid: str) -> tuple[str, str]:
        """The target name and OSTree hash of a build for a hardware id, read and parsed once per view."""
        known = self._targets.get((version, hwid))
        if known is None:  # read per build a page needs: a one-device answer reads one row, not every build
            hit = self.conn.execute(
                "SELECT name, meta FROM ci_targets WHERE version = ? AND hwid = ? ORDER BY rowid DESC LIMIT 1",
                (version, hwid),
            ).fetchone()
            known = (f"{hwid}-lmp-{version}", "") if hit is None else (hit[0], json.loads(hit[1])["hashes"]["sha256"])
            self._targets[(version, hwid)] = known
        return known

    def in_wave(self, d: DeviceRow) -> int | None:
        wid = self.active.get(d["tag"]) if d["is_prod"] else None
        if wid is not None and (d["wave_id"] == wid or d["group_id"] in self.full.get(wid, ())):
            return wid
        return None

    def newest(self, d: DeviceRow) -> int | None:
        if not d["is_prod"]:
            key = ("ci", d["tag"])
        else:
            wid = self.in_wave(d)
            key = ("wave", str(wid)) if wid is not None else ("prod", d["tag"])
        if key not in self._sources:
            self._sources[key] = fleet.source(self.conn, *key, self.now)
        return self._sources[key].newest.get(d["hwid"])

    def json(self, d: DeviceRow, *, single: bool = False) -> JsonObject:
        name, sha = self.target(d["version"], d["hwid"])
        seen = fleet.last_seen(d["online"], d["last_seen"], d["rnd"], self.now, self.model.interval)
        newest = self.newest(d)
        gname = self.groups.get(d["group_id"], ("", ""))[0] if d["group_id"] is not None else ""
        created = store.device_time(d["created_at"])
        out: JsonObject = {
            "uuid": d["uuid"],
            "name": d["name"],
            "owner": d["owner"],
            "factory": self.factory,
            "device-group": gname,
            "created-at": created,
            "last-seen": store.device_time(seen),
            "ostree-hash": sha,
            "tag": d["tag"],
            "device-tags": [d["tag"]],
            "target-name": name,
            "status": "OK" if seen is not None else "",
            "current-update": "",
            "up-to-date": newest is None or d["version"] >= newest,
            "public-key": "",
            "is-prod": bool(d["is_prod"]),
            "is-wave": self.in_wave(d) is not None,
            "hardware-id": d["hwid"],
            "version": d["version"],
            "change-meta": {"created-at": created, "created-by": d["owner"], "updated-at": "", "updated-by": ""},
        }
        if single:
            if d["group_id"] is None:
                out["group"] = None
            else:
                gname, gdesc = self.groups[d["group_id"]]
                out["group"] = {"id": d["group_id"], "name": gname, "description": gdesc}
        return out


class Filters(Struct):
    group: str | None = None
    tag: str | None = None
    target_name: str | None = None
    uuid: str | None = None
    name: str | None = None
    prod: bool | None = None
    sortby: str = "name"
    page: int = 1
    limit: int = 50


def parse_filters(params: Mapping[str, Any]) -> Filters:
    """The device list's query (``req.params``: a repeated parameter is a list, taken as it is)."""
    f = Filters()
    errors: list[str] = []
    f.group = params.get("group") or None
    f.tag = params.get("match_tag") or None
    f.target_name = params.get("target_name") or None
    f.uuid = params.get("uuid") or None
    f.name = params.get("name") or params.get("name_ilike") or None
    prod = params.get("prod")
    if prod not in (None, ""):
        if prod not in ("0", "1", "true", "false"):
            errors.append("prod: 1 or 0")
        f.prod = prod in ("1", "true")
    sortby = params.get("sortby") or "name"
    if sortby not in SORTS:
        errors.append(f"sortby: one of {', '.join(SORTS)}")
    f.sortby = sortby
    for key in ("page", "limit"):
        raw = params.get(key)
        if raw in (None, ""):
            continue
        try:
            value = int(raw)
        except ValueError:
            errors.append(f"{key}: an integer")
            continue
        if (key == "page" and not 1 <= value <= store.MAX_INT) or (key == "limit" and value not in PAGE_LIMITS):
            errors.append(f"{key}: out of range ({f'1..{store.MAX_INT}' if key == 'page' else '1..1000'})")
        setattr(f, key, value)
    if errors:
        raise bad_request("Invalid device list query", errors)
    return f


def list_devices(conn: sqlite3.Connection, f: Filters) -> tuple[list[JsonObject], int]:
    where: list[str] = []  # fixed conditions with ? marks; every value goes into args
    args: list[int | str] = []
    if f.group is not None:
        gid = group_id(conn, f.group)
        where.append("group_id = ?")
        args.append(gid if gid is not None else -1)
    if f.tag is not None:
        where.append("tag = ?")
        args.append(f.tag)
    if f.prod is not None:
        where.append("is_prod = ?")
        args.append(int(f.prod))
    if f.uuid is not None:
        where.append("uuid = ?")
        args.append(f.uuid)
    if f.name is not None:
        pattern = f.name if any(c in f.name for c in "*?") else f"*{f.name}*"
        where.append("name LIKE ? ESCAPE '\\'")
        args.append(
            pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%").replace("?", "_")
        )
    if f.target_name is not None:
        row = conn.execute("SELECT version, hwid FROM ci_targets WHERE name = ?", (f.target_name,)).fetchone()
        where.append("version = ? AND hwid = ?")
        args.extend(row if row else (-1, ""))
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    count_sql = f"SELECT count(*) FROM devices {clause}"  # noqa: S608 - fixed conditions; values are bound (args)
    total = conn.execute(count_sql, args).fetchone()[0]
    view = View(conn)
    ls, ls_args = fleet.last_seen_expr(view.now, view.model.interval)
    page_sql = (
        f"SELECT {_DEV_COLS}, {ls} AS ls FROM devices {clause} "  # noqa: S608 - fixed SQL, ORDER BY from SORTS; values bound
        f"ORDER BY {SORTS[f.sortby]}, id LIMIT ? OFFSET ?"
    )
    rows = conn.execute(page_sql, [*ls_args, *args, f.limit, (f.page - 1) * f.limit]).fetchall()
    return [view.json(_dev(r[:-1])) for r in rows], total


def get_device(conn: sqlite3.Connection, ident: str, *, by_uuid: bool) -> DeviceRow:
    column = "uuid" if by_uuid else "name"
    sql = f"SELECT {_DEV_COLS} FROM devices WHERE {column} = ?"  # noqa: S608 - fixed column names; ident is bound
    row = conn.execute(sql, (ident,)).fetchone()
    if row is None:
        raise not_found(f"Device {ident} not found")
    return _dev(row)


def patch_device(conn: sqlite3.Connection, d: DeviceRow, body: JsonValue) -> DeviceRow:
    """fioctl's ``devices config group`` / ``chown``: ``{"group": name or ""}``, ``{"owner": ...}``.
    A device moved into a group that a wave rolled out in full joins that wave."""
    if not isinstance(body, dict) or not set(body) <= {"group", "owner"} or not body:
        raise bad_request("The request body must be a JSON object with group and/or owner")
    if "group" in body:
        name = body["group"]
        if not isinstance(name, str):
            raise bad_request('group must be a string ("" for no group)')
        gid = None
        if name:
            gid = group_id(conn, name)
            if gid is None:
                raise not_found(f"Device group {name} not found")
        conn.execute("UPDATE devices SET group_id = ? WHERE id = ?", (gid, d["id"]))
    if "owner" in body:
        if not isinstance(body["owner"], str):
            raise bad_request("owner must be a string")
        conn.execute("UPDATE devices SET owner = ? WHERE id = ?", (body["owner"], d["id"]))
    return get_device(conn, d["uuid"], by_uuid=True)


def device_json(conn: sqlite3.Connection, d: DeviceRow) -> JsonObject:
    return View(conn).json(d, single=True)


def device_updates(conn: sqlite3.Connection, d: DeviceRow, page: int, limit: int) -> tuple[list[JsonObject], int]:
    """fioctl's UpdateList: one entry per install attempt, newest first."""
    total = conn.execute("SELECT count(*) FROM update_events WHERE device_id = ?", (d["id"],)).fetchone()[0]
    view = View(conn)
    out: list[JsonObject] = []
    for eid, at, from_v, to_v, ok in conn.execute(
        "SELECT id, at, from_version, to_version, ok FROM update_events WHERE device_id = ? "
        "ORDER BY id DESC LIMIT ? OFFSET ?",
        (d["id"], limit, (page - 1) * limit),
    ):
        out.append(
            {
                "correlation-id": f"{d['uuid']}-{eid}",
                "target": view.target(to_v, d["hwid"])[0],
                "version": str(to_v),
                "time": store.device_time(at),
                "success": bool(ok),
                "from-version": str(from_v),
            }
        )
    return out, total


def update_events(conn: sqlite3.Connection, d: DeviceRow, correlation_id: str) -> list[JsonObject]:
    """fioctl's ``devices updates show`` (``UpdateEvent``, fioctl:client/foundries_device.go#L48-63): the
    report events aktualizr-lite sends for one update. Download, then installation; the last event,
    ``EcuInstallationCompleted``, carries ``success`` (false for a failed install, with details)."""
    prefix = f"{d['uuid']}-"
    eid = correlation_id[len(prefix) :] if correlation_id.startswith(prefix) else ""
    row = conn.execute(
        "SELECT at, to_version, ok FROM update_events WHERE device_id = ? AND id = ?",
        (d["id"], int(eid) if eid.isdigit() else -1),
    ).fetchone()
    if row is None:
        raise not_found(f"Update {correlation_id} of device {d['name']} not found")
    at, to_v, ok = row
    target = View(conn).target(to_v, d["hwid"])[0]

    def event(kind: str, offset: int, success: bool | None = None, details: str = "") -> JsonObject:
        detail: JsonObject = {"version": str(to_v), "targetName": target, "details": details}
        if success is not None:
            detail["success"] = success
        return {"deviceTime": store.device_time(at - offset), "eventType": {"id": kind, "version": 0}, "event": detail}

    return [
        event("EcuDownloadStarted", 90),
        event("EcuDownloadCompleted", 60, True),
        event("EcuInstallationStarted", 30),
        event(
            "EcuInstallationCompleted",
            0,
            bool(ok),
            "" if ok else f"Installation of {target} failed; the device stays on its previous version",
        ),
    ]


# ------------------------------------------------------------------------------------ adding devices


class NewDevice(Struct):
    name: str
    uuid: str
    tag: str
    hwid: str
    version: int
    production: bool = True
    group: str | None = None


CSV_COLUMNS = ("name", "uuid", "group", "tag", "production", "hardware_id", "version")


def parse_csv(text: str) -> list[NewDevice]:
    """Rows ``name,uuid,group,tag,production,hardware_id,version`` with that header; uuid may be
    empty (a random one is made), group may be empty (no group), production is true/false/1/0."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("name", "tag", "hardware_id", "version") if c not in (reader.fieldnames or [])]
    if missing:
        raise ApiError(400, f"CSV header lacks column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)}")
    out: list[NewDevice] = []
    errors: list[str] = []
    for line, row in enumerate(reader, start=2):
        raw = (row.get("version") or "").strip()
        if not re.fullmatch(r"[+-]?[0-9]+", raw):
            errors.append(f"line {line}: version must be an integer")
            continue
        version = int(raw) if len(raw) <= 20 else -1
        if not 0 <= version <= store.MAX_INT:
            errors.append(f"line {line}: version must be between 0 and {store.MAX_INT}")
            continue
        prod = (row.get("production") or "true").strip().lower()
        if prod not in ("true", "false", "1", "0", "yes", "no"):
            errors.append(f"line {line}: production must be true or false")
            continue
        out.append(
            NewDevice(
                name=(row.get("name") or "").strip(),
                uuid=(row.get("uuid") or "").strip(),
                tag=(row.get("tag") or "").strip(),
                hwid=(row.get("hardware_id") or "").strip(),
                version=version,
                production=prod in ("true", "1", "yes"),
                group=(row.get("group") or "").strip() or None,
            )
        )
    if errors:
        raise ApiError(400, "Invalid device CSV", errors)
    return out


def add_devices(conn: sqlite3.Connection, new: list[NewDevice], actor: str = "") -> int:
    """Register devices (all or none). A device starts online, as if it just checked in."""
    errors: list[str] = []
    seed = store.get_meta(conn, "seed", "0")
    ts = store.now(conn)
    m = fleet.model(conn)
    groups = {name: gid for gid, name in conn.execute("SELECT id, name FROM device_groups")}
    rows: list[tuple[str, str, int | None, str, int, str, int, int, int, int, int, str]] = []
    seen_names: set[str] = set()
    seen_uuids: set[str] = set()
    for i, d in enumerate(new, start=1):
        uid = d.uuid or str(uuidlib.uuid4())
        with contextlib.suppress(ValueError):  # not a UUID: kept as written, checked below
            uid = str(uuidlib.UUID(uid)) if len(uid) == 36 else uid
        if not DEVICE_NAME_RE.fullmatch(d.name or ""):
            errors.append(f"device {i}: invalid name {d.name!r}")
        if not uid or len(uid) > 60:
            errors.append(f"device {i}: invalid uuid")
        if not waves.TAG_RE.match(d.tag or ""):
            errors.append(f"device {i}: invalid tag {d.tag!r}")
        if not HWID_RE.match(d.hwid or ""):
            errors.append(f"device {i}: invalid hardware id {d.hwid!r}")
        if isinstance(d.version, bool) or not isinstance(d.version, int) or not 0 <= d.version <= store.MAX_INT:
            errors.append(f"device {i}: version must be between 0 and {store.MAX_INT}")
        if d.group is not None and d.group not in groups:
            errors.append(f"device {i}: no device group {d.group}")
        if d.name in seen_names or uid in seen_uuids:
            errors.append(f"device {i}: duplicate name or uuid in the input")
        seen_names.add(d.name)
        seen_uuids.add(uid)
        rnd = rnd_for(seed, uid)
        seen = ts - ((ts - rnd % m.interval) % m.interval)
        rows.append(
            (uid, d.name, groups.get(d.group), d.tag, int(d.production), d.hwid, d.version, 1, seen, rnd, ts, actor)
        )
    if not errors:
        for i in range(0, len(rows), 5000):
            chunk = rows[i : i + 5000]
            marks = ",".join("?" * len(chunk))
            by_name = f"SELECT name FROM devices WHERE name IN ({marks})"  # noqa: S608 - ? marks only; names are bound
            by_uuid = f"SELECT uuid FROM devices WHERE uuid IN ({marks})"  # noqa: S608 - ? marks only; UUIDs are bound
            for (dup,) in conn.execute(by_name, [r[1] for r in chunk]):
                errors.append(f"a device named {dup} already exists")
            for (dup,) in conn.execute(by_uuid, [r[0] for r in chunk]):
                errors.append(f"a device with uuid {dup} already exists")
    if errors:
        raise ApiError(400, f"{len(errors)} problem(s) with the devices to add", errors[:1000])
    conn.executemany(
        "INSERT INTO devices(uuid, name, group_id, tag, is_prod, hwid, version, online, last_seen, rnd, created_at, "
        "owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return len(rows)
