"""The simulated fleet: what each device fetches, and check-ins when simulated time advances.

Model (all of it seeded, so a factory replays identically):

- every device checks in every ``checkin_interval`` seconds (300) at a fixed phase ``rnd % interval``;
- each UTC day a device is offline for the whole day with probability ``offline_per_day`` (5%), and
  a share ``dead`` (1%) never checks in again; both come from a hash of the device's ``rnd`` and the
  day, computed in SQL;
- at a check-in the device fetches its view of the repository (repo.py): the CI targets for a CI
  device; for a production device the targets of the active wave of its tag when the wave has staged
  it (explicitly or through a fully rolled-out group), else its tag's production targets. It runs
  the TUF client flow (tufclient.py): the root chain 1..N, timestamp, snapshot and targets, each
  against the root's keys and threshold, the versions each lists, expiry, and rollback against the
  versions it trusts (columns ``tuf_*``, written when a device accepts a new snapshot). Devices that fetch the same files share the verification
  of their bytes (cached per distinct set of files), so a million devices cost a handful of
  signature checks; per device only versions and the check-in time are compared, in SQL. A device
  that refuses (say its wave was canceled and the tag's production targets have a lower version
  than the wave's it trusts) keeps what it trusted and installs nothing;
- it then installs the newest version its metadata offers for its tag and hardware id, never a
  downgrade; an install fails with probability ``install_failure`` (2%) per attempt, hashed from the
  device, the version and the day: the failure is recorded as an update event (ok = 0) and the
  device stays where it was and retries the next day. A bad build (``reconcile-factory build N
  --failure-rate 30%``) also fails on that share of devices, hashed from the device and the version
  only, so the same devices fail it at every attempt;
- ``last_seen`` is written only when a device changes state; while ``online`` is 1 its last check-in
  is derived from the clock (``last_seen_expr``).

``advance`` processes time in chunks that never cross a UTC day boundary, each with a few set-based
SQL statements; Python loops only over (tag, hardware id) pairs and active waves.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

from msgspec import Struct

from . import repo, store, targets, trust, tufclient
from .shapes import DeviceRow

DAY = 86400
P31 = 2147483647  # a prime: multiplicative hashing modulo it stays within 63-bit integers
# Named SQL parameters of a simulation chunk (integers, and a tag).
SqlParams = dict[str, int | str]
DEFAULTS = {"checkin_interval": 300, "offline_per_day_bp": 500, "dead_bp": 100, "install_failure_bp": 200}


class Model(Struct, frozen=True):
    interval: int
    offline_bp: int  # basis points (1/10,000)
    dead_bp: int
    failure_bp: int


def set_build_failure(conn: sqlite3.Connection, version: int, basis_points: int) -> None:
    """Make installs of build ``version`` fail on this share (1/10,000) of devices."""
    store.set_meta(conn, f"build_failure_bp:{int(version)}", int(basis_points))


def build_failure(conn: sqlite3.Connection, version: int) -> int:
    return store.meta_int(conn, f"build_failure_bp:{int(version)}", 0)


def model(conn: sqlite3.Connection) -> Model:
    return Model(
        *(
            store.meta_int(conn, k, DEFAULTS[k])
            for k in ("checkin_interval", "offline_per_day_bp", "dead_bp", "install_failure_bp")
        )
    )


# SQL fragments over a devices row; :day, :interval, :off, :dead are bound by the caller.
_H_DAY = "(((rnd & 2147483647) * ((:day * 40503 + 12345) % 2147483647 + 1)) % 2147483647)"
ONLINE_TODAY_SQL = f"(((rnd >> 31) & 65535) % 10000 >= :dead AND {_H_DAY} % 10000 >= :off)"
PHASE_SQL = "(rnd % :interval)"


def last_seen_expr(now: int, interval: int) -> tuple[str, list[int]]:
    """SQL for the displayed last check-in of a devices row (derived while online, stored otherwise),
    with the values for its ``?`` marks, in order."""
    return ("CASE WHEN online = 1 THEN ? - ((? - (rnd % ?)) % ?) ELSE last_seen END", [now, now, interval, interval])


def last_seen(online: int, stored: int | None, rnd: int, now: int, interval: int) -> int | None:
    if online:
        return now - ((now - rnd % interval) % interval)
    return stored


def online_today(rnd: int, day: int, m: Model) -> bool:
    """The same function as ONLINE_TODAY_SQL, for devices created in Python."""
    h = ((rnd & P31) * ((day * 40503 + 12345) % P31 + 1)) % P31
    return ((rnd >> 31) & 65535) % 10000 >= m.dead_bp and h % 10000 >= m.offline_bp


# ------------------------------------------------------------------------------------ metadata


class Source(Struct):
    """The metadata a class of devices fetches, verified, and what it offers per hardware id."""

    kind: str  # "ci" | "prod" | "wave"
    key: str  # tag or wave id
    checked: tufclient.Checked | None  # None when a device refuses the files whatever it trusts
    newest: dict[str, int]  # hwid -> highest version offered (empty if unverifiable)
    problem: str = ""


_checked: dict[str, tufclient.Checked | str] = {}
_checked_lock = threading.Lock()
_CHECKED_MAX = 1024


def check_view(conn: sqlite3.Connection, v: repo.View | None, now: int) -> tuple[tufclient.Checked | None, str]:
    """What a device does with a view's files (tufclient), for the bytes alone: verified once per
    distinct set of files and cached, as every device fetching them would reach the same verdict.
    Expiry and rollback depend on the clock and the device: the caller compares ``Checked``."""
    if v is None:
        return None, "no targets"
    chain = trust.root_chain(conn, v.root_kind)
    if not chain:
        return None, "no root metadata"
    ts, snap = repo.timestamp(conn, v, now), repo.snapshot(conn, v)
    key = tufclient.fingerprint(*chain, ts, snap, v.targets)
    with _checked_lock:
        hit = _checked.get(key)
    if hit is None:
        try:
            root = tufclient.update_root(chain[0], lambda n: chain[n - 1] if n <= len(chain) else None)
            hit = tufclient.check(root, ts, snap, v.targets)
        except tufclient.Refused as e:
            hit = str(e)
        with _checked_lock:
            if len(_checked) >= _CHECKED_MAX:
                _checked.clear()
            _checked[key] = hit
    if isinstance(hit, str):
        return None, hit
    return hit, ""


def sources(conn: sqlite3.Connection) -> dict[tuple[str, str], Source]:
    """Every view in the factory (CI per tag, production per tag, active waves), checked once."""
    now = store.now(conn)
    keys = [
        ("ci", tag)
        for (tag,) in conn.execute("SELECT DISTINCT tag FROM devices INDEXED BY devices_pick_tag WHERE is_prod = 0")
    ]
    keys += [("prod", tag) for (tag,) in conn.execute("SELECT tag FROM prod_targets ORDER BY tag")]
    keys += [("wave", str(wid)) for (wid,) in conn.execute("SELECT id FROM waves WHERE status = 'active'")]
    return {(kind, key): source(conn, kind, key, now) for kind, key in keys}


def source(conn: sqlite3.Connection, kind: str, key: str, now: int) -> Source:
    """One view (``ci``/``prod`` and a tag, or ``wave`` and an active wave's id), checked: what a device
    fetching it is offered. A request about a few devices checks only their views."""
    v = repo.view(conn, kind, key)
    checked, problem = check_view(conn, v, now)
    if checked is not None and checked.expires <= now:
        problem = f"{checked.expiring} metadata has expired"
    newest: dict[str, int] = {}
    if v is not None and not problem:
        tag = key if kind != "wave" else conn.execute("SELECT tag FROM waves WHERE id = ?", (int(key),)).fetchone()[0]
        newest = targets.newest_by_hwid(v.targets["signed"]["targets"], tag)
    return Source(kind, key, checked, newest, problem)


def device_source_key(conn: sqlite3.Connection, device: DeviceRow) -> tuple[str, str]:
    """Which view one device fetches (see the module docstring)."""
    if not device["is_prod"]:
        return ("ci", device["tag"])
    row = conn.execute("SELECT id FROM waves WHERE tag = ? AND status = 'active'", (device["tag"],)).fetchone()
    if row is not None:
        wave_id = row[0]
        staged = device["wave_id"] == wave_id or (
            device["group_id"] is not None
            and conn.execute(
                "SELECT 1 FROM wave_groups WHERE wave_id = ? AND group_id = ? AND full_group = 1",
                (wave_id, device["group_id"]),
            ).fetchone()
            is not None
        )
        if staged:
            return ("wave", str(wave_id))
    return ("prod", device["tag"])


def device_view(conn: sqlite3.Connection, device: DeviceRow) -> tuple[str, repo.View | None]:
    """(root kind, view or None) of the repository this device fetches from the gateway."""
    kind, key = device_source_key(conn, device)
    return ("prod" if device["is_prod"] else "ci"), repo.view(conn, kind, key)


# ------------------------------------------------------------------------------------ advance


def advance(
    conn: sqlite3.Connection, seconds: int, progress: Callable[[int, int], None] | None = None
) -> dict[str, int]:
    """Move the simulated clock forward, letting every device check in on its schedule.

    ``progress(done, total)`` in simulated seconds after each simulated day, for a long advance."""
    if seconds < 0:
        raise ValueError("time only moves forward")
    start = store.now(conn)
    end = start + seconds
    stats = {"updated": 0, "failed": 0}
    t = start
    while t < end:
        chunk_end = min(end, (t // DAY + 1) * DAY)
        _chunk(conn, t, chunk_end, stats)
        t = chunk_end
        store.set_meta(conn, "now", t)
        if progress:
            progress(t - start, seconds)
    store.set_meta(conn, "now", end)
    stats["online"] = conn.execute("SELECT count(*) FROM devices WHERE online = 1").fetchone()[0]
    return stats


def _chunk(conn: sqlite3.Connection, a: int, b: int, stats: dict[str, int]) -> None:
    """Simulate [a, b), which lies within one UTC day."""
    m = model(conn)
    day = a // DAY
    p: SqlParams = {
        "day": day,
        "daystart": day * DAY,
        "interval": m.interval,
        "off": m.offline_bp,
        "dead": m.dead_bp,
        "a": a,
        "b": b,
    }
    first = f"(:a + ((({PHASE_SQL} - :a) % :interval) + :interval) % :interval)"  # first check-in >= a
    if a % DAY == 0:
        # A new day: devices offline today stop checking in; their last check-in was before a.
        conn.execute(
            f"UPDATE devices SET online = 0, last_seen = :a - 1 - ((:a - 1 - {PHASE_SQL}) % :interval) "  # noqa: S608 - fixed fragments; values bound from p
            f"WHERE online = 1 AND NOT {ONLINE_TODAY_SQL}",
            p,
        )
    # Devices online today that were not checking in come back at their first check-in in [a, b).
    conn.execute(
        f"UPDATE devices SET online = 1, last_seen = {first} "  # noqa: S608 - fixed fragments; values bound from p
        f"WHERE online = 0 AND {ONLINE_TODAY_SQL} AND {first} < :b",
        p,
    )
    _install(conn, a, b, m, p, first, stats)


def _bind_list(params: SqlParams, prefix: str, values: list[int]) -> str:
    """Named marks (``:prefix0, :prefix1, ...``) for an IN list, with the values added to ``params``."""
    names = [f"{prefix}{i}" for i in range(len(values))]
    params.update(zip(names, values, strict=True))
    return ", ".join(f":{n}" for n in names)


def _install(
    conn: sqlite3.Connection, a: int, b: int, m: Model, p: SqlParams, first: str, stats: dict[str, int]
) -> None:
    """Devices checking in during [a, b) fetch their view; those that accept it (tufclient: not
    expired at their check-in, no version below what they trust) record what they now trust, and
    install the newest version it offers for their hardware id when that is newer."""
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS fleet_todo (id INTEGER PRIMARY KEY, from_v INTEGER, "
        "to_v INTEGER, at INTEGER, ok INTEGER)"
    )
    conn.execute("DELETE FROM fleet_todo")
    src = sources(conn)
    active = {tag: wid for wid, tag in conn.execute("SELECT id, tag FROM waves WHERE status = 'active'")}
    fulls: dict[int, list[int]] = {}
    for wid, gid in conn.execute(
        "SELECT wave_id, group_id FROM wave_groups WHERE full_group = 1 AND wave_id IN "
        "(SELECT id FROM waves WHERE status = 'active')"
    ):
        fulls.setdefault(wid, []).append(gid)
    fail = (
        "((((rnd & 2147483647) * ((:to * 69621 + :day * 48271 + 7) % 2147483647 + 1)) % 2147483647) "
        "% 10000 < :fail OR (((rnd & 2147483647) * ((:to * 92821 + 17) % 2147483647 + 1)) % 2147483647) "
        "% 10000 < :bad)"
    )
    accepts = (
        f"online = 1 AND {first} < :b AND {first} < :exp AND tuf_timestamp <= :ts "
        "AND tuf_snapshot <= :snap AND tuf_targets <= :tv"
    )
    # Devices record the versions they accepted when the snapshot is new to them. A re-signed timestamp
    # of the same snapshot is not written per device: within a snapshot version timestamp versions only
    # grow with time (repo.py), so the stored one stays a lower bound that orders every file the
    # factory can serve the same way, and an unchanged view costs no writes.
    trust_sql = (
        "UPDATE devices{trust_index} SET tuf_timestamp = :ts, tuf_snapshot = :snap, tuf_targets = :tv "  # noqa: S608 - fixed fragments; values bound from q
        f"WHERE tuf_snapshot < :snap AND {accepts} AND "
    )
    # One attempt per device, version and day: a device that failed today retries tomorrow.
    insert = (
        f"INSERT OR IGNORE INTO fleet_todo(id, from_v, to_v, at, ok) SELECT id, version, :to, {first}, "  # noqa: S608 - fixed fragments; values bound from q
        f"NOT {fail} FROM devices{{status_index}} WHERE {accepts} AND hwid = :hwid AND version < :to "
        f"AND NOT EXISTS (SELECT 1 FROM update_events e WHERE e.device_id = devices.id AND e.ok = 0 "
        f"AND e.to_version = :to AND e.at >= :daystart) AND "
    )
    for (kind, key), source in src.items():
        c = source.checked
        if c is None:
            continue
        q = dict(p, tag=key, ts=c.timestamp, snap=c.snapshot, tv=c.targets, exp=c.expires, fail=m.failure_bp)
        # (index hint, condition): devices of a tag walk devices_trust for the trust update (only those
        # behind the view's snapshot) and devices_status for installs (only those below a version).
        if kind == "ci":
            members = [(True, "tag = :tag AND is_prod = 0")]
        elif kind == "wave":
            wid = int(key)
            q["wid"] = wid
            members = [(False, "is_prod = 1 AND wave_id = :wid")]
            groups = fulls.get(wid, [])
            if groups:
                q["tag"] = conn.execute("SELECT tag FROM waves WHERE id = ?", (wid,)).fetchone()[0]
                marks = _bind_list(q, "full", groups)
                members.append((True, f"tag = :tag AND is_prod = 1 AND group_id IN ({marks})"))
        else:
            wid = active.get(key)
            staged = ""
            if wid is not None:
                q["active_wid"] = wid
                staged = " AND (wave_id IS NULL OR wave_id != :active_wid)"
                if fulls.get(wid):
                    marks = _bind_list(q, "full", fulls[wid])
                    staged += f" AND (group_id IS NULL OR group_id NOT IN ({marks}))"
            members = [(True, "tag = :tag AND is_prod = 1" + staged)]
        for by_tag, member in members:
            conn.execute(trust_sql.format(trust_index=" INDEXED BY devices_trust" if by_tag else "") + member, q)
            install = insert.format(status_index=" INDEXED BY devices_status" if by_tag else "") + member
            for hwid, newest in source.newest.items():
                conn.execute(install, dict(q, to=newest, hwid=hwid, bad=build_failure(conn, newest)))
    conn.execute(
        "INSERT INTO update_events(device_id, at, from_version, to_version, ok) "
        "SELECT id, at, from_v, to_v, ok FROM fleet_todo ORDER BY at, id"
    )
    conn.execute("UPDATE devices SET version = t.to_v FROM fleet_todo AS t WHERE devices.id = t.id AND t.ok = 1")
    ok, failed = conn.execute("SELECT coalesce(sum(ok), 0), coalesce(sum(1 - ok), 0) FROM fleet_todo").fetchone()
    stats["updated"] += ok
    stats["failed"] += failed
    conn.execute("DELETE FROM fleet_todo")
