"""Wave status (``GET waves/{wave}/status/``, fioctl's WaveStatus and RolloutGroupStatus, reference §2.3).

One scan of the ``devices_status`` covering index (per group and version: devices, online devices)
plus, for an active wave, the devices its rollouts staged explicitly (``devices_wave`` index).
"""

from __future__ import annotations

import sqlite3

from . import store, targets
from .waves import Wave, full_group_ids, resolve


def known_versions(conn: sqlite3.Connection, tag: str, wave: Wave | None = None) -> set[int]:
    """Versions in the tag's production targets (and an active or completed wave's): others are orphans."""
    versions = set()
    prod = targets.prod_targets(conn, tag)
    files = dict(prod["signed"]["targets"]) if prod else {}
    if wave is not None and wave.status != "canceled":
        files.update(wave.signed_obj["targets"])
    for meta in files.values():
        v = targets.target_version(meta)
        if v is not None:
            versions.add(v)
    return versions


def status(conn: sqlite3.Connection, name: str, offline_threshold: int) -> dict:
    """WaveStatus (reference §2.3). "Rollout groups" count the devices the wave's rollouts reached:
    every device of a fully rolled-out group, and the devices a partial rollout staged. ``updated`` /
    ``scheduled`` are, for an active wave, those devices on the wave version or newer / older; for a
    completed wave every device of the tag; for a canceled one nothing is scheduled."""
    wave = resolve(conn, name)
    ts = store.now(conn)
    cutoff = ts - offline_threshold * 3600
    full = set(full_group_ids(conn, wave.id))
    counts: dict = {}  # group_id -> {version: [total, online, staged]}
    for gid, version, n, online in conn.execute(
            "SELECT group_id, version, count(*), sum(online = 1 OR last_seen >= ?) FROM devices "
            "INDEXED BY devices_status WHERE tag = ? AND is_prod = 1 GROUP BY group_id, version",
            (cutoff, wave.tag)):
        counts.setdefault(gid, {})[version] = [n, online, n if gid in full else 0]
    if wave.status == "active":
        for gid, version, n in conn.execute(
                "SELECT group_id, version, count(*) FROM devices WHERE wave_id = ? AND tag = ? AND is_prod = 1 "
                "GROUP BY group_id, version", (wave.id, wave.tag)):
            if gid not in full and gid in counts and version in counts[gid]:
                counts[gid][version][2] = n
    known = known_versions(conn, wave.tag, wave)
    v = wave.version

    def scheduled_in(version: int, row: list) -> int:
        if version >= v:
            return 0
        return {"active": row[2], "complete": row[0]}.get(wave.status, 0)

    total = updated = scheduled = 0
    for per_version in counts.values():
        for version, row in per_version.items():
            total += row[0]
            if version >= v:
                updated += row[2] if wave.status == "active" else row[0]
            scheduled += scheduled_in(version, row)

    names = {gid: gname for gid, gname in conn.execute("SELECT id, name FROM device_groups")}
    rollout_groups = conn.execute(
        "SELECT group_id, group_name, created_at FROM wave_groups WHERE wave_id = ? ORDER BY seq",
        (wave.id,)).fetchall()

    def group_status(gid, gname: str, rollout_at: int | None) -> dict:
        per_version = counts.get(gid, {})
        return {
            "name": gname,
            "rollout-at": store.iso(rollout_at),
            "devices-total": sum(r[0] for r in per_version.values()),
            "devices-online": sum(r[1] for r in per_version.values()),
            "devices-on-wave-version": sum(r[0] for ver, r in per_version.items() if ver == v),
            "devices-on-newer-version": sum(r[0] for ver, r in per_version.items() if ver > v),
            "devices-on-older-version": sum(r[0] for ver, r in per_version.items() if ver < v),
            "devices-scheduled-for-update": sum(scheduled_in(ver, r) for ver, r in per_version.items()),
            "targets": [{"version": ver, "devices": r[0], "is-orphan": ver not in known}
                        for ver, r in sorted(per_version.items(), reverse=True)],
        }

    rolled = [group_status(gid, gname, at) for gid, gname, at in rollout_groups]
    rolled_ids = {gid for gid, _, _ in rollout_groups}
    others = sorted((gid for gid in counts if gid not in rolled_ids and gid is not None),
                    key=lambda g: names.get(g, ""))
    other = [group_status(gid, names.get(gid, ""), None) for gid in others]
    if None in counts:
        other.append(group_status(None, "", None))
    return {
        "name": wave.name,
        "version": v,
        "tag": wave.tag,
        "status": wave.status,
        "created-at": store.iso(wave.created_at),
        "finished-at": store.iso(wave.updated_at),
        "total-devices": total,
        "updated-devices": updated,
        "scheduled-devices": scheduled,
        "unscheduled-devices": total - updated - scheduled,
        "rollout-groups": rolled,
        "other-groups": other,
    }
