"""Wave rollouts: which devices a rollout reaches, and staging them (reference §2.2).

- ``group`` alone is a *full-group* rollout: the whole group, including devices that join it later
  (the group is recorded as fully rolled out; membership is resolved when a device checks in).
- ``limit`` (1..10,000) or ``percentage`` (1..100, of the devices matching the wave in the group or
  factory-wide, or of the ``uuids`` given, rounded up) picks devices pseudo-randomly, online devices
  first; ``uuids`` (at most 10,000) names them; ``uuids`` with a limit picks from that list.
- A pick never includes a device already staged in this wave (explicitly or by a full group) nor
  one already on the wave version or newer; ``device-num`` counts the devices this call adds.
- Every given UUID must be a production device with the wave's tag, in the group when one is given;
  otherwise 400 names the offending UUIDs (all of them in ``errors``).
- One rollout-history entry per (non-dry-run) call, even when it reaches no new device.

Pseudo-random order: every device has a random 62-bit ``rnd``; a rollout walks the devices in
``rnd`` order starting at a point derived from the factory seed, the wave and the number of its
rollouts so far, online devices first. The walk reads about as many index entries as it picks, so
a 10,000-device pick is fast in a million-device factory, and a dry run followed by the same
rollout picks the same devices.
"""

from __future__ import annotations

import hashlib
import sqlite3
from math import ceil

from msgspec import Struct, field

from . import devices, groups, store, waves
from .errors import bad_request, not_found
from .shapes import JsonObject, JsonValue

MAX_DEVICES = 10_000
MAX_UUID_LEN = 60
RND_BITS = 62
RND_MASK = (1 << RND_BITS) - 1


class Options(Struct):
    group: str | None = None
    limit: int | None = None
    percentage: int | None = None
    uuids: list[str] = field(default_factory=list)
    dry_run: bool = False
    return_uuids: bool = False
    return_names: bool = False


def parse_options(body: JsonValue) -> Options:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object (WaveRolloutOptions)")
    errors: list[str] = []
    opts = Options()
    group = body.get("group")
    if group not in (None, ""):
        if isinstance(group, str):
            opts.group = group
        else:
            errors.append("group: must be a string")
    for key in ("limit", "percentage"):
        value = body.get(key)
        if value in (None, 0):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{key}: must be an integer")
        elif key == "limit" and not 1 <= value <= MAX_DEVICES:
            errors.append(f"limit: must be between 1 and {MAX_DEVICES:,}, not {value}")
        elif key == "percentage" and not 1 <= value <= 100:
            errors.append(f"percentage: must be between 1 and 100, not {value}")
        else:
            setattr(opts, key, value)
    if opts.limit is not None and opts.percentage is not None:
        errors.append("limit and percentage cannot be given together")
    uuids = body.get("uuids")
    if uuids not in (None, []):
        if not isinstance(uuids, list) or not all(isinstance(u, str) for u in uuids):
            errors.append("uuids: must be a list of strings")
        else:
            cleaned = list(dict.fromkeys(u.strip() for u in uuids if u.strip()))
            if len(cleaned) > MAX_DEVICES:
                errors.append(f"uuids: at most {MAX_DEVICES:,} UUIDs per rollout, not {len(cleaned):,}")
            too_long = [u for u in cleaned if len(u) > MAX_UUID_LEN]
            if too_long:
                errors.append(f"uuids: {len(too_long)} item(s) longer than {MAX_UUID_LEN} characters")
            opts.uuids = cleaned
    for key, attr in (("dry-run", "dry_run"), ("return-uuids", "return_uuids"), ("return-names", "return_names")):
        value = body.get(key, False)
        if not isinstance(value, bool):
            errors.append(f"{key}: must be true or false")
        setattr(opts, attr, value is True)
    if errors:
        raise bad_request("Invalid rollout options", errors)
    if opts.group is None and opts.limit is None and opts.percentage is None and not opts.uuids:
        raise bad_request(
            "A rollout needs a group, a limit, a percentage or UUIDs; to roll out to every device, complete the wave"
        )
    return opts


class Pick(Struct):
    ids: list[int]
    count: int
    uuids: list[str]
    names: list[str]


def _start(conn: sqlite3.Connection, wave: waves.Wave, opts: Options) -> int:
    n = conn.execute("SELECT count(*) FROM rollouts WHERE wave_id = ?", (wave.id,)).fetchone()[0]
    seed = store.get_meta(conn, "seed", "0")
    digest = hashlib.blake2b(f"{seed}:{wave.id}:{n}:{opts.group or ''}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & RND_MASK


def rollout(conn: sqlite3.Connection, name: str, body: JsonValue, actor: str) -> JsonObject:
    opts = parse_options(body)
    wave = waves.resolve(conn, name)
    waves.require_active(wave, "roll out")
    waves.require_signed(conn, wave, "roll out")
    waves.require_unexpired(conn, wave, "roll out")
    group_id = None
    if opts.group is not None:
        group_id = groups.group_id(conn, opts.group)
        if group_id is None:
            raise not_found(f"Device group {opts.group} not found")
    full = set(waves.full_group_ids(conn, wave.id))
    if opts.uuids:
        pick = _pick_from_uuids(conn, wave, opts, group_id, full)
    elif opts.limit is None and opts.percentage is None:
        if group_id is None:  # parse_options refuses a rollout with no group, limit, percentage or UUIDs
            raise bad_request("A rollout without a limit, a percentage or UUIDs needs a group")
        pick = _pick_full_group(conn, wave, group_id, full)
    else:
        pick = _pick_random(conn, wave, opts, group_id, full)
    if not opts.dry_run:
        _stage(conn, wave, opts, group_id, pick, actor)
    result = waves.wave_json(conn, waves.resolve_id(conn, wave.id))
    listed = pick.count <= MAX_DEVICES
    result["device-num"] = pick.count
    result["device-uuids"] = pick.uuids if opts.return_uuids and listed else []
    result["device-names"] = pick.names if opts.return_names and listed else []
    return result


def _in_wave_sql(full: set[int]) -> tuple[str, list[int]]:
    """SQL condition (and its arguments) for 'not yet reached by this wave'."""
    cond = "(wave_id IS NULL OR wave_id != ?)"
    if full:
        marks = ",".join("?" * len(full))
        cond += f" AND (group_id IS NULL OR group_id NOT IN ({marks}))"
    return cond, sorted(full)


def _pick_random(
    conn: sqlite3.Connection, wave: waves.Wave, opts: Options, group_id: int | None, full: set[int]
) -> Pick:
    if group_id is not None and group_id in full:
        return Pick([], 0, [], [])
    if opts.percentage is not None:
        if group_id is None:
            base = conn.execute(
                "SELECT count(*) FROM devices INDEXED BY devices_pick_tag WHERE tag = ? AND is_prod = 1", (wave.tag,)
            ).fetchone()[0]
        else:
            base = conn.execute(
                "SELECT count(*) FROM devices INDEXED BY devices_pick_group "
                "WHERE tag = ? AND is_prod = 1 AND group_id = ?",
                (wave.tag, group_id),
            ).fetchone()[0]
        wanted = percentage_count(opts.percentage, base)
    elif opts.limit is not None:
        wanted = opts.limit
    else:  # rollout() sends a pick with neither to _pick_full_group
        raise ValueError("a random pick needs a limit or a percentage")
    start = _start(conn, wave, opts)
    not_reached, extra = _in_wave_sql(full)
    scope_args: list[str | int]
    if group_id is None:
        scope, scope_args, index = "tag = ? AND is_prod = 1", [wave.tag], "devices_pick_tag"
    else:
        scope, scope_args, index = (
            "tag = ? AND is_prod = 1 AND group_id = ?",
            [wave.tag, group_id],
            "devices_pick_group",
        )
    rows: list[tuple[int, str, str]] = []  # id, uuid, name
    for online in (1, 0):
        for rnd_cond in ("rnd >= ?", "rnd < ?"):
            need = wanted - len(rows)
            if need <= 0:
                break
            rows += conn.execute(
                f"SELECT id, uuid, name FROM devices INDEXED BY {index} WHERE {scope} AND {rnd_cond} "  # noqa: S608 - fixed index, conditions and ? marks; values bound
                f"AND online = ? AND version < ? AND {not_reached} ORDER BY rnd LIMIT ?",
                [*scope_args, start, online, wave.version, wave.id, *extra, need],
            ).fetchall()
    return Pick([r[0] for r in rows], len(rows), [r[1] for r in rows], [r[2] for r in rows])


def _pick_full_group(conn: sqlite3.Connection, wave: waves.Wave, group_id: int, full: set[int]) -> Pick:
    if group_id in full:
        return Pick([], 0, [], [])
    cond = "tag = ? AND is_prod = 1 AND group_id = ? AND version < ? AND (wave_id IS NULL OR wave_id != ?)"
    args: list[str | int] = [wave.tag, group_id, wave.version, wave.id]
    count_sql = f"SELECT count(*) FROM devices WHERE {cond}"  # noqa: S608 - a fixed condition; values bound (args)
    count = conn.execute(count_sql, args).fetchone()[0]
    rows: list[tuple[int, str, str]] = []  # id, uuid, name
    if count <= MAX_DEVICES:
        rows_sql = f"SELECT id, uuid, name FROM devices WHERE {cond} ORDER BY name"  # noqa: S608 - as count_sql
        rows = conn.execute(rows_sql, args).fetchall()
    return Pick([], count, [r[1] for r in rows], [r[2] for r in rows])


def _pick_from_uuids(
    conn: sqlite3.Connection, wave: waves.Wave, opts: Options, group_id: int | None, full: set[int]
) -> Pick:
    found = devices.by_uuids(conn, opts.uuids)
    errors: list[str] = []
    for u in opts.uuids:
        d = found.get(u)
        if d is None:
            errors.append(f"{u}: no such device in this factory")
        elif not d["is_prod"]:
            errors.append(f"{u}: not a production device")
        elif d["tag"] != wave.tag:
            errors.append(f"{u}: follows tag {d['tag']}, not the wave's tag {wave.tag}")
        elif group_id is not None and d["group_id"] != group_id:
            errors.append(f"{u}: not in device group {opts.group}")
    if errors:
        bad = [e.split(":", 1)[0] for e in errors]
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        where = f" in group {opts.group}" if opts.group else ""
        raise bad_request(f"{len(bad)} UUID(s) are not production devices with tag {wave.tag}{where}: {shown}", errors)
    candidates = [
        (u, d)
        for u, d in ((u, found[u]) for u in opts.uuids)
        if d["version"] < wave.version and d["wave_id"] != wave.id and d["group_id"] not in full
    ]
    if opts.limit is not None:
        wanted: int | None = opts.limit
    elif opts.percentage is not None:
        wanted = percentage_count(opts.percentage, len(opts.uuids))
    else:
        wanted = None  # every candidate
    if wanted is not None:
        start = _start(conn, wave, opts)
        candidates.sort(key=lambda ud: (-ud[1]["online"], (ud[1]["rnd"] - start) & RND_MASK))
        candidates = candidates[:wanted]
    return Pick(
        [d["id"] for _, d in candidates],
        len(candidates),
        [u for u, _ in candidates],
        [d["name"] for _, d in candidates],
    )


def _stage(
    conn: sqlite3.Connection, wave: waves.Wave, opts: Options, group_id: int | None, pick: Pick, actor: str
) -> None:
    ts = store.now(conn)
    is_full = opts.group is not None and not opts.uuids and opts.limit is None and opts.percentage is None
    if pick.ids:
        conn.executemany("UPDATE devices SET wave_id = ? WHERE id = ?", ((wave.id, i) for i in pick.ids))
    if group_id is not None:
        seq = conn.execute("SELECT count(*) FROM wave_groups WHERE wave_id = ?", (wave.id,)).fetchone()[0]
        conn.execute(
            "INSERT INTO wave_groups(wave_id, group_id, group_name, created_at, created_by, full_group, seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(wave_id, group_id) DO UPDATE SET "
            "full_group = max(full_group, excluded.full_group)",
            (wave.id, group_id, opts.group, ts, actor, int(is_full), seq),
        )
    conn.execute(
        "INSERT INTO rollouts(wave_id, group_id, group_name, rollout_by, rollout_at, is_full_group, is_factory_wide, "
        "num_devices) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (wave.id, group_id, opts.group or "", actor, ts, int(is_full), int(group_id is None), pick.count),
    )


def percentage_count(percentage: int, base: int) -> int:
    """``percentage`` of ``base`` devices, rounded up (a 1% rollout of 50 devices reaches one)."""
    return ceil(percentage * base / 100)
