"""Factory status (``GET /ota/factories/{f}/status/``, fioctl's FactoryStatus): devices per CI tag,
per production tag, and production devices in an active wave (``wave-tags``), with per-version and
per-group counts. One covering-index scan of the devices table plus the staged devices of active waves."""

from __future__ import annotations

import sqlite3

from . import store, targets, waves
from .shapes import JsonObject

# Devices per version: [devices, online devices].
PerVersion = dict[int, list[int]]


def factory_status(conn: sqlite3.Connection, offline_threshold: int) -> JsonObject:
    """fioctl's FactoryStatus: CI tags, production tags, and production devices in active waves."""
    ts = store.now(conn)
    cutoff = ts - offline_threshold * 3600
    names = dict(conn.execute("SELECT id, name FROM device_groups").fetchall())
    active = {
        tag: waves.resolve_id(conn, wid)
        for wid, tag in conn.execute("SELECT id, tag FROM waves WHERE status = 'active'").fetchall()
    }
    full = {w.id: set(waves.full_group_ids(conn, w.id)) for w in active.values()}
    staged: dict[
        tuple[str, int | None, int], list[int]
    ] = {}  # (tag, group, version) -> [devices, online] staged explicitly in the tag's active wave
    for w in active.values():
        for gid, version, n, online in conn.execute(
            "SELECT group_id, version, count(*), sum(online = 1 OR last_seen >= ?) FROM devices "
            "WHERE wave_id = ? AND tag = ? AND is_prod = 1 GROUP BY group_id, version",
            (cutoff, w.id, w.tag),
        ):
            staged[(w.tag, gid, version)] = [n, online]
    buckets: dict[tuple[str, str], dict[int | None, PerVersion]] = {}  # (section, tag) -> {gid: {version: ...}}
    total = 0
    for tag, is_prod, gid, version, n, online in conn.execute(
        "SELECT tag, is_prod, group_id, version, count(*), sum(online = 1 OR last_seen >= ?) "
        "FROM devices INDEXED BY devices_status GROUP BY tag, is_prod, group_id, version",
        (cutoff,),
    ):
        total += n
        if not is_prod:
            buckets.setdefault(("tags", tag), {}).setdefault(gid, {})[version] = [n, online]
            continue
        tag_wave = active.get(tag)
        if tag_wave is not None and gid in full[tag_wave.id]:
            in_wave, in_wave_online = n, online
        else:
            in_wave, in_wave_online = staged.get((tag, gid, version), (0, 0))
        if in_wave:
            buckets.setdefault(("wave-tags", tag), {}).setdefault(gid, {})[version] = [in_wave, in_wave_online]
        if n - in_wave:
            buckets.setdefault(("prod-tags", tag), {}).setdefault(gid, {})[version] = [
                n - in_wave,
                online - in_wave_online,
            ]
    ci_json = targets.ci_targets_json(conn)
    ci_files = ci_json["signed"]["targets"] if ci_json else {}
    prod = targets.all_prod_targets(conn)

    def versions_of(section: str, tag: str) -> set[int]:
        if section == "tags":
            files = {n: m for n, m in ci_files.items() if tag in (m.get("custom", {}).get("tags") or [])}
        elif section == "prod-tags":
            files = prod.get(tag, {}).get("signed", {}).get("targets", {})
        else:
            files = active[tag].signed_obj["targets"]
        return {v for v in (targets.target_version(m) for m in files.values()) if v is not None}

    sections: dict[str, list[JsonObject]] = {"tags": [], "prod-tags": [], "wave-tags": []}
    for (section, tag), groups in sorted(buckets.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        known = versions_of(section, tag)
        latest = max(known) if known else 0
        per_version: dict[int, int] = {}
        for vs in groups.values():
            for v, (n, _) in vs.items():
                per_version[v] = per_version.get(v, 0) + n

        merged: PerVersion = {}
        for vs in groups.values():
            for v, (n, o) in vs.items():
                merged.setdefault(v, [0, 0])
                merged[v][0] += n
                merged[v][1] += o
        sections[section].append(
            {
                "name": tag,
                **_summary(merged, latest, known),
                "latest-target": latest,
                "targets": [
                    {"version": v, "devices": n, "is-orphan": v not in known}
                    for v, n in sorted(per_version.items(), reverse=True)
                ],
                "device-groups": [
                    {"name": names.get(gid, "") if gid is not None else "", **_summary(vs, latest, known)}
                    for gid, vs in sorted(groups.items(), key=lambda kv: (kv[0] is None, names.get(kv[0], "")))
                ],
            }
        )
    return {"total-devices": total, **sections}


def _summary(vs: PerVersion, latest: int, known: set[int]) -> JsonObject:
    """TagStatus counters over {version: [devices, online]}."""
    return {
        "devices-total": sum(n for n, _ in vs.values()),
        "devices-online": sum(o for _, o in vs.values()),
        "devices-on-latest": sum(n for v, (n, _) in vs.items() if v == latest),
        "devices-on-orphan": sum(n for v, (n, _) in vs.items() if v not in known),
    }
