"""Device groups (reference §1.6): list, create, rename, delete; 409 for a duplicate name or a group
that still has devices. Renaming or deleting a group updates the waves' rollout groups and history
(a deleted group shows an empty ``group-name``, as fioctl expects)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from . import store
from .errors import bad_request, conflict, not_found
from .shapes import JsonObject, JsonValue

# As wave names (waves.NAME_RE): no dot segments, no final newline.
GROUP_NAME_RE = re.compile(r"(?!\.\.?$)[a-zA-Z0-9_.-]{1,100}")


def group_id(conn: sqlite3.Connection, name: str) -> int | None:
    row = conn.execute("SELECT id FROM device_groups WHERE name = ?", (name,)).fetchone()
    gid: int | None = row[0] if row else None
    return gid


def _group_json(row: Sequence[Any]) -> JsonObject:
    gid, name, desc, cat, cby, uat, uby = row
    return {
        "id": gid,
        "name": name,
        "description": desc,
        "change-meta": {
            "created-at": store.iso(cat),
            "created-by": cby,
            "updated-at": store.iso(uat),
            "updated-by": uby,
        },
    }


_GROUP_COLS = "id, name, description, created_at, created_by, updated_at, updated_by"


def list_groups(conn: sqlite3.Connection) -> list[JsonObject]:
    sql = f"SELECT {_GROUP_COLS} FROM device_groups ORDER BY name"  # noqa: S608 - fixed column names only
    return [_group_json(r) for r in conn.execute(sql)]


def get_group(conn: sqlite3.Connection, name: str) -> JsonObject:
    sql = f"SELECT {_GROUP_COLS} FROM device_groups WHERE name = ?"  # noqa: S608 - fixed column names; name is bound
    row = conn.execute(sql, (name,)).fetchone()
    if row is None:
        raise not_found(f"Device group {name} not found")
    return _group_json(row)


def create_group(conn: sqlite3.Connection, body: JsonValue, actor: str) -> JsonObject:
    if not isinstance(body, dict):
        raise bad_request('The request body must be a JSON object {"name", "description"}')
    name, desc = body.get("name"), body.get("description", "")
    if not isinstance(name, str) or not GROUP_NAME_RE.fullmatch(name):
        raise bad_request("Invalid device group", ["name: letters, digits, '_', '.' and '-' only (at most 100)"])
    if not isinstance(desc, str):
        raise bad_request("Invalid device group", ["description: must be a string"])
    if group_id(conn, name) is not None:
        raise conflict(f"A device group with the name {name} already exists")
    ts = store.now(conn)
    conn.execute(
        "INSERT INTO device_groups(name, description, created_at, created_by, updated_at, updated_by) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (name, desc, ts, actor, ts, actor),
    )
    return get_group(conn, name)


def patch_group(conn: sqlite3.Connection, name: str, body: JsonValue, actor: str) -> JsonObject:
    gid = group_id(conn, name)
    if gid is None:
        raise not_found(f"Device group {name} not found")
    if not isinstance(body, dict):
        raise bad_request('The request body must be a JSON object {"name", "description"}')
    new_name, desc = body.get("name", name), body.get("description")
    if not isinstance(new_name, str) or not GROUP_NAME_RE.fullmatch(new_name):
        raise bad_request("Invalid device group", ["name: letters, digits, '_', '.' and '-' only (at most 100)"])
    if desc is not None and not isinstance(desc, str):
        raise bad_request("Invalid device group", ["description: must be a string"])
    if new_name != name and group_id(conn, new_name) is not None:
        raise conflict(f"A device group with the name {new_name} already exists")
    conn.execute(
        "UPDATE device_groups SET name = ?, description = coalesce(?, description), updated_at = ?, "
        "updated_by = ? WHERE id = ?",
        (new_name, desc, store.now(conn), actor, gid),
    )
    conn.execute("UPDATE wave_groups SET group_name = ? WHERE group_id = ?", (new_name, gid))
    conn.execute("UPDATE rollouts SET group_name = ? WHERE group_id = ?", (new_name, gid))
    return get_group(conn, new_name)


def delete_group(conn: sqlite3.Connection, name: str) -> None:
    gid = group_id(conn, name)
    if gid is None:
        raise not_found(f"Device group {name} not found")
    if conn.execute("SELECT 1 FROM devices WHERE group_id = ? LIMIT 1", (gid,)).fetchone():
        raise conflict(f"Device group {name} has devices assigned: move them first")
    conn.execute("DELETE FROM device_groups WHERE id = ?", (gid,))
    conn.execute("DELETE FROM wave_groups WHERE group_id = ?", (gid,))
    conn.execute("UPDATE rollouts SET group_name = '', group_id = NULL WHERE group_id = ?", (gid,))
